"""Cloud runs of recipes: one container entrypoint for SageMaker training jobs and RunPod pods
(`python -m ftkit.cloud.entrypoint`), and the launch descriptions `ftkit cloud sagemaker|runpod` prints.

* `settings`: SageMaker hyperparameters / RunPod env -> recipe, profile and `--set` values (the `--set` checks).
* `channels`: SageMaker input channels (one per stage) -> `--set` overrides of the stages' dataset paths.
* `entrypoint`: run, resume after a restart, publish the model, report failures the platform's way.
* `sagemaker`, `runpod`: the estimator call and the pod template, built by pure functions; launching needs the
  optional `sagemaker` / `runpod` SDK and is the only place either is imported.
"""
