"""Evaluate a fine-tuned model directory: held-out perplexity, generation and template checks,
forgetting against the base model, and lm-evaluation-harness tasks; one JSON report (eval.json)."""

from ftkit.evaluate.forgetting import Comparison, ForgettingResult, forgetting_check
from ftkit.evaluate.generation import AnswerCheck, GenerationResult, TemplateCheck, generation_check
from ftkit.evaluate.harness import lm_eval_arguments, run_lm_eval
from ftkit.evaluate.loading import load_model
from ftkit.evaluate.perplexity import PerplexityResult, SkippedRow, perplexity
from ftkit.evaluate.prompts import DEFAULT_CHAT_PROMPTS, Prompt, load_prompts
from ftkit.evaluate.suite import evaluate_model, write_eval

__all__ = [
    "DEFAULT_CHAT_PROMPTS",
    "AnswerCheck",
    "Comparison",
    "ForgettingResult",
    "GenerationResult",
    "PerplexityResult",
    "Prompt",
    "SkippedRow",
    "TemplateCheck",
    "evaluate_model",
    "forgetting_check",
    "generation_check",
    "lm_eval_arguments",
    "load_model",
    "load_prompts",
    "perplexity",
    "run_lm_eval",
    "write_eval",
]
