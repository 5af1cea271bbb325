"""A seeded, labelled test set for the PII detector: texts with the exact spans of every structured entity.

`build_testset(n_per_entity, seed)` returns, for each structured entity (EMAIL, PHONE, CREDIT_CARD, US_SSN,
IBAN, IP_ADDRESS, URL, SECRET), `n_per_entity` texts built around one value of that entity (some texts hold
several values, of the same or other entities), plus `2 * n_per_entity` hard negatives with no spans. The
same arguments give the same texts, byte for byte (one `random.Random(seed)` drives everything, and each
Faker instance is reseeded from it).

How values are made
  EMAIL        faker `email(safe=False)`, `free_email()`, `company_email()` in several locales, plus
               plus-tags and dotted names on sub-domains.
  PHONE        faker `phone_number()` in 12 locales, either as faker writes it (national or +CC, with
               faker's en_US extensions such as `x9150`) or reformatted by phonenumbers as E.164
               (`+4930123456`) or INTERNATIONAL (`+49 30 123456`). Faker's formats include strings that are
               not phone numbers of that country at all (de_DE `(00695) 848304`, en_IN `0028280200`,
               sv_SE `0074-833 78`: a national number cannot start with the 00 international prefix; en_US
               `001-335-504-9258` uses another country's exit code): those are dropped with phonenumbers'
               `is_possible_number` (a length/prefix check only; about 5% of draws). Numbers that are
               possible but not *valid* (faker en_US invents area codes such as 591) are kept — a person
               reads them as phone numbers — and each gold span's kind says `valid` or `not-valid`, so the
               report shows recall on both. The detector itself is never used to choose values.
  CREDIT_CARD  faker `credit_card_number()` for visa16/visa19/mastercard/amex/discover/jcb16/diners/maestro
               (all Luhn-valid), plain, or grouped with spaces or dashes the way the card prints them. Three
               faker slips are corrected by drawing again: jcb16 uses the prefix 35 although JCB issues only
               3528-3589, and maestro includes 0604 and 6390, which no network issues; jcb15 (retired
               1800/2131 prefixes) is not used. Faker's Maestro numbers are 12 digits (allowed: 12-19).
  US_SSN       faker en_US `ssn()` (area 001-899 without 666, group and serial non-zero) as 123-45-6789,
               123 45 6789, or 123456789; every SSN template says "SSN" or "social security number" nearby.
  IBAN         faker `iban()` in 13 locales (mod-97 valid), compact or in groups of four.
  IP_ADDRESS   faker public and private IPv4, IPv6 in faker's full form and compressed with `::` (a tenth of
               the IPv6 in upper case). Loopback is not used.
  URL          URLs that carry credentials, composed here: `scheme://user:password@host[:port]/path` for
               http(s), ftp and database schemes (postgres, mysql, mongodb+srv, redis, amqp); query strings
               with token=, access_token=, auth_token=, api_key=, apikey=, password=, secret= and a random value;
               Azure SAS URLs (`?sv=2022-11-02&...&sig=<percent-encoded base64>`, sig= last as Azure writes it).
               The span is the whole URL, without trailing punctuation.
  SECRET       random characters of each provider's documented alphabet and length: AWS key ids (AKIA/ASIA +
               16 base32), AWS secret keys (40 base64, assigned to aws_secret_access_key), GitHub
               ghp_/gho_/ghs_/ghu_/ghr_ + 36 and github_pat_ 22_59, GitLab glpat- + 20, Slack xox[bpars]-
               tokens and hooks.slack.com webhooks, Hugging Face hf_ + 34 letters, OpenAI sk-…T3BlbkFJ… and
               sk-proj-…T3BlbkFJ…, Anthropic sk-ant-api03- + 93 + AA, JWTs (real base64url JSON header and
               payload), PEM private-key blocks (RSA, EC, PKCS#8, OpenSSH; also JSON-escaped with literal \\n
               as in a service-account file), Google AIza + 35, Stripe sk_live_, and values assigned to
               api_key/password/secret/token-like names (random alphanumerics, hex, base64, faker passwords).
               For an assignment the span is the value only, without quotes.

Each gold span carries a kind (`LabelledText.kinds`, parallel to `spans`) such as `card:amex:spaced` or
`phone:e164:DE:valid`, and each text a `source` (the template family, or `neg:<category>`), so a report can
break recall down and point at what the detector misses.

Hard negatives (no spans; anything found in them is a false positive)
  16-digit numbers with card prefixes that fail Luhn; SSN-shaped numbers that are not SSNs (000-, 666- and
  9xx- areas, 00 group, 0000 serial); IBAN-shaped strings with a wrong mod-97 check; invalid IPv4 (999.1.2.3,
  256.10.0.1, 1.2.3); dates; times; prices; version strings; order/invoice ids; ISBNs; git SHAs, UUIDs and
  sha256 checksums in prose or assigned to names that are not secret-like (commit, request_id, checksum);
  "password" in prose; placeholder assignments (`api_key = "<your-api-key>"`, `password: "********"`,
  `token=${TOKEN}`, `os.environ["KEY"]`, `YOUR_API_KEY`); URLs without credentials (also with placeholder
  tokens); `user@` without a domain; short numbers (call 911, room 101, port 8080); ML hyperparameters,
  coordinates, CSS colours.
  Choices that keep the set fair: a random digit run of 7-15 digits may be a dialable phone number, so
  negatives contain no bare digit runs of that length; the longer digit strings they do hold are ones no
  reader takes for a phone (dates, ISBNs after "ISBN", ids with letter prefixes, 16-digit card-like numbers,
  3-2-4 SSN shapes, dotted quads with an octet over 255, the digits inside an IBAN-shaped string).
  AWS's published example key (AKIAIOSFODNN7EXAMPLE) and `git@github.com` are not used.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote

import phonenumbers
from faker import Faker

STRUCTURED = ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "URL", "SECRET")

ALNUM = string.ascii_letters + string.digits
BASE32 = string.ascii_uppercase + "234567"
BASE64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"
HEX = "0123456789abcdef"

LOCALES = (
    "en_US", "en_GB", "de_DE", "fr_FR", "en_IN", "pt_BR", "it_IT", "nl_NL", "es_ES", "en_AU", "ja_JP", "pl_PL",
    "de_AT", "de_CH", "pt_PT", "nl_BE", "fi_FI", "en_IE", "da_DK",
)  # fmt: skip
PHONE_REGIONS = {
    "en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "en_IN": "IN", "pt_BR": "BR", "it_IT": "IT",
    "nl_NL": "NL", "es_ES": "ES", "en_AU": "AU", "ja_JP": "JP", "pl_PL": "PL",
}  # fmt: skip
IBAN_LOCALES = (
    "en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT", "pt_BR", "pl_PL", "de_AT", "de_CH", "pt_PT", "nl_BE",
    "fi_FI",
)  # fmt: skip
EMAIL_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "en_IN", "pt_BR", "it_IT", "nl_NL", "es_ES", "pl_PL")

SLOT = re.compile(r"⟪([A-Za-z_:0-9]+)⟫")


class Span(NamedTuple):
    start: int
    end: int
    entity: str


@dataclass(frozen=True, slots=True)
class LabelledText:
    """`text[start:end]` of each span is one entity value; `kinds[i]` says how `spans[i]` was made."""

    text: str
    spans: list[Span]
    kinds: list[str]
    source: str


class Value(NamedTuple):
    """A generated piece of text: an entity value (entity set) or filler (entity None)."""

    text: str
    entity: str | None
    kind: str


@dataclass(frozen=True, slots=True)
class Ctx:
    rng: random.Random
    fakers: dict[str, Faker]

    def fk(self, locale: str = "en_US") -> Faker:
        return self.fakers[locale]

    def any_fk(self, locales: tuple[str, ...] = LOCALES) -> Faker:
        return self.fakers[self.rng.choice(locales)]

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choices(alphabet, k=n))


def make_ctx(seed: int) -> Ctx:
    rng = random.Random(seed)
    fakers = {}
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(rng.randrange(2**32))
        fakers[locale] = fake
    return Ctx(rng, fakers)


# ---------------------------------------------------------------------------------------------------------------
# Checksums the generator needs to make negatives (the positives come from faker, which already gets them right)


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "")
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def group(text: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, i = [], 0
    for size in sizes:
        parts.append(text[i : i + size])
        i += size
    if i < len(text):
        parts.append(text[i:])
    return sep.join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------------------------
# Entity values


def email_value(ctx: Ctx) -> Value:
    fake = ctx.fk(ctx.rng.choice(EMAIL_LOCALES))
    style = ctx.rng.choice(("email", "free", "company", "plus", "dotted"))
    if style == "email":
        text = fake.email(safe=False)
    elif style == "free":
        text = fake.free_email()
    elif style == "company":
        text = fake.company_email()
    elif style == "plus":
        local, domain = fake.free_email().split("@")
        text = f"{local}+{ctx.rng.choice(('news', 'shop', 'github', 'work', '2024'))}@{domain}"
    else:
        first, last = ctx.fk().first_name().lower(), ctx.fk().last_name().lower()
        sub = ctx.rng.choice(("mail", "corp", "eu", "staff", "students"))
        text = f"{first}.{last}@{sub}.{ctx.fk().domain_name()}"
    return Value(text, "EMAIL", f"email:{style}")


def _parse_phone(raw: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None


def phone_value(ctx: Ctx) -> Value:
    locale = ctx.rng.choice(tuple(PHONE_REGIONS))
    region = PHONE_REGIONS[locale]
    while True:  # faker's formats sometimes make strings that are no phone number of the country (docstring)
        raw = ctx.fk(locale).phone_number()
        parsed = _parse_phone(raw, region)
        if parsed is not None and phonenumbers.is_possible_number(parsed):
            break
    style = ctx.rng.choices(("faker", "e164", "intl"), weights=(2, 1, 1))[0]
    if style == "e164":
        text = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    elif style == "intl":
        text = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    else:
        text = raw
    valid = "valid" if phonenumbers.is_valid_number(parsed) else "not-valid"
    return Value(text, "PHONE", f"phone:{style}:{region}:{valid}")


CARD_TYPES = ("visa16", "visa19", "mastercard", "amex", "discover", "jcb16", "diners", "maestro")
CARD_WEIGHTS = (25, 4, 25, 14, 10, 8, 7, 7)
CARD_GROUPS = {12: (4, 4, 4), 14: (4, 6, 4), 15: (4, 6, 5), 16: (4, 4, 4, 4), 19: (4, 4, 4, 4, 3)}


# Faker's jcb16 prefix is "35", but JCB issues only 3528-3589; its maestro list has 0604 and 6390, which are no
# Maestro range. Those draws are no card number of any network and are drawn again.
CARD_REAL: dict[str, Callable[[str], bool]] = {
    "jcb16": lambda n: 3528 <= int(n[:4]) <= 3589,
    "maestro": lambda n: not n.startswith(("0604", "6390")),
}


def card_value(ctx: Ctx) -> Value:
    ctype = ctx.rng.choices(CARD_TYPES, weights=CARD_WEIGHTS)[0]
    number = ctx.fk().credit_card_number(ctype)
    while not CARD_REAL.get(ctype, lambda _: True)(number):
        number = ctx.fk().credit_card_number(ctype)
    style = ctx.rng.choice(("plain", "spaced", "spaced", "dashed"))
    if style != "plain":
        number = group(number, CARD_GROUPS.get(len(number), (4, 4, 4, 4)), " " if style == "spaced" else "-")
    return Value(number, "CREDIT_CARD", f"card:{ctype}:{style}")


def ssn_value(ctx: Ctx) -> Value:
    ssn = ctx.fk().ssn()
    style = ctx.rng.choices(("dashed", "spaced", "plain"), weights=(7, 2, 1))[0]
    text = {"dashed": ssn, "spaced": ssn.replace("-", " "), "plain": ssn.replace("-", "")}[style]
    return Value(text, "US_SSN", f"ssn:{style}")


def iban_value(ctx: Ctx) -> Value:
    locale = ctx.rng.choice(IBAN_LOCALES)
    iban = ctx.fk(locale).iban()
    style = ctx.rng.choice(("compact", "grouped"))
    text = iban if style == "compact" else group(iban, (4,) * 10, " ")
    return Value(text, "IBAN", f"iban:{iban[:2]}:{style}")


def _ipv6_with_zero_run(ctx: Ctx) -> str:
    groups = [f"{ctx.rng.randrange(0x2001, 0x2C00):x}"] + [f"{ctx.rng.randrange(1, 0x10000):x}" for _ in range(7)]
    start = ctx.rng.randrange(2, 6)
    for i in range(start, start + ctx.rng.randrange(2, 4)):
        groups[i] = "0"
    return str(ipaddress.IPv6Address(":".join(groups)))


def ip_value(ctx: Ctx) -> Value:
    style = ctx.rng.choices(("v4-public", "v4-private", "v6-full", "v6-compressed"), weights=(5, 2, 2, 2))[0]
    if style == "v4-public":
        text = ctx.fk().ipv4_public()
    elif style == "v4-private":
        text = ctx.fk().ipv4_private()
    elif style == "v6-full":
        text = ctx.fk().ipv6()
    else:
        text = _ipv6_with_zero_run(ctx)
    if ctx.rng.random() < 0.1 and style.startswith("v6"):
        text = text.upper()
    return Value(text, "IP_ADDRESS", f"ip:{style}")


DB_SCHEMES = {"postgres": 5432, "postgresql": 5432, "mysql": 3306, "mongodb+srv": None, "redis": 6379, "amqp": 5672}
QUERY_PARAMS = ("token", "access_token", "api_key", "apikey", "password", "secret", "auth_token")


def _password(ctx: Ctx) -> str:
    return ctx.chars(ALNUM + "-_.~", ctx.rng.randrange(10, 25))


def url_value(ctx: Ctx) -> Value:
    fake = ctx.fk()
    style = ctx.rng.choices(("userinfo-web", "userinfo-db", "query", "azure-sas"), weights=(3, 3, 4, 1))[0]
    user = fake.user_name()
    if style == "userinfo-web":
        scheme = ctx.rng.choice(("https", "http", "ftp", "https"))
        text = f"{scheme}://{user}:{_password(ctx)}@{fake.domain_name()}/{fake.uri_path()}"
    elif style == "userinfo-db":
        scheme = ctx.rng.choice(tuple(DB_SCHEMES))
        port = DB_SCHEMES[scheme]
        host = f"{ctx.rng.choice(('db', 'pg', 'cache', 'mq', 'prod-db'))}.{fake.domain_name()}"
        host = host if port is None else f"{host}:{port}"
        text = f"{scheme}://{user}:{_password(ctx)}@{host}/{fake.word()}"
    elif style == "query":
        param = ctx.rng.choice(QUERY_PARAMS)
        secret = ctx.chars(ALNUM, ctx.rng.randrange(24, 41)) if ctx.rng.random() < 0.7 else ctx.chars(HEX, 32)
        before = ctx.rng.choice(("", f"user_id={ctx.rng.randrange(1000, 99999)}&", "format=json&", "lang=en&"))
        after = ctx.rng.choice(("", "", "&page=2", "&format=csv"))
        host = f"{ctx.rng.choice(('api', 'app', 'www'))}.{fake.domain_name()}"
        text = f"https://{host}/{fake.uri_path()}?{before}{param}={secret}{after}"
    else:
        sig = quote(base64.b64encode(ctx.rng.randbytes(32)).decode(), safe="")
        account = f"{fake.word()}{ctx.rng.randrange(10, 999)}"
        text = (
            f"https://{account}.blob.core.windows.net/{fake.word()}/{fake.file_name()}"
            f"?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2025-{ctx.rng.randrange(1, 13):02d}-01T00:00:00Z&spr=https&sig={sig}"
        )
    return Value(text, "URL", f"url:{style}")


# ---------------------------------------------------------------------------------------------------------------
# Secrets: one value maker per documented format, and the places people paste each one


def _compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _jwt(ctx: Ctx) -> str:
    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    alg = ctx.rng.choice(("HS256", "RS256", "ES256"))
    now = ctx.rng.randrange(1_600_000_000, 1_750_000_000)
    payload = {"sub": str(ctx.rng.randrange(10**6, 10**9)), "name": ctx.any_fk().name(), "iat": now}
    if ctx.rng.random() < 0.5:
        payload |= {"exp": now + 3600, "scope": ctx.rng.choice(("read", "read write", "admin"))}
    signature = ctx.rng.randbytes({"HS256": 32, "RS256": 256, "ES256": 64}[alg])
    return ".".join((b64url(_compact({"alg": alg, "typ": "JWT"})), b64url(_compact(payload)), b64url(signature)))


PEM_LABELS = ("RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY")


def _pem(ctx: Ctx, newline: str = "\n") -> str:
    label = ctx.rng.choice(PEM_LABELS)
    head = b"openssh-key-v1\x00" if label.startswith("OPENSSH") else b"\x30\x82\x04\xa4"
    body = base64.b64encode(head + ctx.rng.randbytes(ctx.rng.randrange(120, 900))).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return newline.join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])


def _slack_token(ctx: Ctx) -> str:
    prefix = ctx.rng.choice(("xoxb", "xoxp", "xoxa", "xoxr", "xoxs"))
    team, user = (
        ctx.chars(string.digits, ctx.rng.randrange(10, 14)),
        ctx.chars(string.digits, ctx.rng.randrange(10, 14)),
    )
    if prefix == "xoxp":
        return f"{prefix}-{team}-{user}-{ctx.chars(string.digits, 13)}-{ctx.chars(HEX, 32)}"
    return f"{prefix}-{team}-{user}-{ctx.chars(ALNUM, 24)}"


def _openai_key(ctx: Ctx) -> str:
    """Legacy sk-<20>T3BlbkFJ<20>, or a project key sk-proj-<58..74>T3BlbkFJ<58..74> ("T3BlbkFJ" is base64 "OpenAI")."""
    if ctx.rng.random() < 0.4:
        return f"sk-{ctx.chars(ALNUM, 20)}T3BlbkFJ{ctx.chars(ALNUM, 20)}"
    head, tail = ctx.chars(URLSAFE, ctx.rng.randrange(58, 75)), ctx.chars(URLSAFE, ctx.rng.randrange(58, 75))
    return f"sk-proj-{head}T3BlbkFJ{tail}"


def _generic_value(ctx: Ctx) -> str:
    style = ctx.rng.choice(("alnum", "hex", "base64", "password", "urlsafe"))
    if style == "alnum":
        return ctx.chars(ALNUM, ctx.rng.randrange(20, 41))
    if style == "hex":
        return ctx.chars(HEX, ctx.rng.choice((32, 40, 64)))
    if style == "base64":
        return base64.b64encode(ctx.rng.randbytes(ctx.rng.choice((24, 32)))).decode()
    if style == "urlsafe":
        return base64.urlsafe_b64encode(ctx.rng.randbytes(32)).decode().rstrip("=")
    password = ctx.fk().password(length=ctx.rng.randrange(12, 21))
    while password.startswith("$"):  # reads as a shell variable ($8…) in the .env/docker templates
        password = ctx.fk().password(length=ctx.rng.randrange(12, 21))
    return password


class SecretKind(NamedTuple):
    make: Callable[[Ctx], str]
    env: str  # the environment variable people keep it in; "" when it has none
    templates: tuple[str, ...]  # where it is pasted, beside the shared ENV_TEMPLATES when env is set
    bare: bool = True  # recognisable on its own (a provider prefix), so BARE_TEMPLATES apply too


SECRET_KINDS: dict[str, SecretKind] = {
    "aws_access_key_id": SecretKind(
        lambda c: c.rng.choice(("AKIA", "AKIA", "ASIA")) + c.chars(BASE32, 16),
        "AWS_ACCESS_KEY_ID",
        (
            "aws_access_key_id = ⟪V⟫",
            '"AccessKeyId": "⟪V⟫",',
            "I think I leaked ⟪V⟫ in a public gist yesterday, how do I deactivate it?",
            "[default]\naws_access_key_id = ⟪V⟫\n"
            "aws_secret_access_key = ⟪SECRET:aws_secret_access_key⟫\nregion = eu-west-1\n",
        ),
    ),
    "aws_secret_access_key": SecretKind(
        lambda c: c.chars(BASE64, 40),
        "AWS_SECRET_ACCESS_KEY",
        (
            "aws_secret_access_key = ⟪V⟫",
            '{"aws_access_key_id": "⟪SECRET:aws_access_key_id⟫", "aws_secret_access_key": "⟪V⟫"}',
            "export AWS_ACCESS_KEY_ID=⟪SECRET:aws_access_key_id⟫\nexport AWS_SECRET_ACCESS_KEY=⟪V⟫\n",
            "  aws_secret_access_key: ⟪V⟫",
        ),
        bare=False,  # 40 base64 characters are a secret key only where they are assigned to its name
    ),
    "github_token": SecretKind(
        lambda c: c.rng.choice(("ghp_", "ghp_", "gho_", "ghs_", "ghu_", "ghr_")) + c.chars(ALNUM, 36),
        "GITHUB_TOKEN",
        ("git remote set-url origin https://github.com/⟪user⟫/repo.git  # then pushed with ⟪V⟫",),
    ),
    "github_pat": SecretKind(
        lambda c: f"github_pat_{c.chars(ALNUM, 22)}_{c.chars(ALNUM, 59)}",
        "GH_TOKEN",
        ("gh auth login --with-token <<< ⟪V⟫",),
    ),
    "gitlab_pat": SecretKind(
        lambda c: "glpat-" + c.chars(URLSAFE, 20),
        "GITLAB_TOKEN",
        ('curl --header "PRIVATE-TOKEN: ⟪V⟫" https://gitlab.com/api/v4/projects',),
    ),
    "slack_token": SecretKind(
        _slack_token, "SLACK_BOT_TOKEN", ("app = App(token=\"⟪V⟫\", signing_secret=os.environ['SIGNING_SECRET'])",)
    ),
    "slack_webhook": SecretKind(
        lambda c: (
            f"https://hooks.slack.com/services/T{c.chars(string.ascii_uppercase + string.digits, 10)}"
            f"/B{c.chars(string.ascii_uppercase + string.digits, 10)}/{c.chars(ALNUM, 24)}"
        ),
        "SLACK_WEBHOOK_URL",
        ("curl -X POST -H 'Content-type: application/json' --data '{\"text\":\"deploy done\"}' ⟪V⟫",),
    ),
    "huggingface": SecretKind(
        lambda c: "hf_" + c.chars(string.ascii_letters, 34),
        "HF_TOKEN",
        (
            "huggingface-cli login --token ⟪V⟫",
            'model = AutoModel.from_pretrained("meta-llama/Llama-3.1-8B", token="⟪V⟫")',
        ),
    ),
    "openai": SecretKind(
        _openai_key,
        "OPENAI_API_KEY",
        ('client = OpenAI(api_key="⟪V⟫")', "openai.api_key = '⟪V⟫'"),
    ),
    "anthropic": SecretKind(
        lambda c: f"sk-ant-api03-{c.chars(URLSAFE, 93)}AA",
        "ANTHROPIC_API_KEY",
        (
            'client = anthropic.Anthropic(api_key="⟪V⟫")',
            "curl https://api.anthropic.com/v1/messages -H 'x-api-key: ⟪V⟫'",
        ),
    ),
    "google_api_key": SecretKind(
        lambda c: "AIza" + c.chars(URLSAFE, 35),
        "GOOGLE_API_KEY",
        ('genai.configure(api_key="⟪V⟫")', "firebase apiKey: ⟪V⟫"),
    ),
    "stripe": SecretKind(
        lambda c: "sk_live_" + c.chars(ALNUM, c.rng.choice((24, 99))), "STRIPE_SECRET_KEY", ('stripe.api_key = "⟪V⟫"',)
    ),
    "jwt": SecretKind(
        _jwt,
        "",
        (
            "Authorization: Bearer ⟪V⟫",
            'curl -H "Authorization: Bearer ⟪V⟫" https://api.⟪host⟫/v1/me',
            '{"access_token": "⟪V⟫", "token_type": "Bearer", "expires_in": 3600}',
            "Cookie: session=⟪V⟫; theme=dark",
            "the login response was ⟪V⟫ but the API says 401",
            "⟪ts⟫ DEBUG request headers={'Authorization': 'Bearer ⟪V⟫', 'Accept': 'application/json'}",
        ),
    ),
    "pem": SecretKind(
        _pem,
        "",
        (
            "$ cat ~/.ssh/id_rsa\n⟪V⟫\n",
            "Here is the key the vendor sent us:\n\n⟪V⟫\n\nPlease load it into the vault.",
            "⟪V⟫",
            "```\n⟪V⟫\n```\nwhy does openssl say 'bad decrypt'?",
        ),
    ),
    "pem_json_escaped": SecretKind(
        lambda c: _pem(c, newline="\\n"),
        "",
        (
            '{\n  "type": "service_account",\n  "project_id": "⟪word⟫-⟪int⟫",\n  "private_key": "⟪V⟫\\n",\n'
            '  "client_email": "⟪SA_EMAIL⟫"\n}',
        ),
    ),
    "assigned": SecretKind(
        _generic_value,
        "",
        (
            '⟪key⟫ = "⟪V⟫"',
            "⟪KEY⟫=⟪V⟫",
            '"⟪key⟫": "⟪V⟫",',
            "⟪key⟫: ⟪V⟫",
            "⟪key⟫: '⟪V⟫'",
            'config = {"host": "⟪host⟫", "user": "⟪user⟫", "⟪key⟫": "⟪V⟫"}',
            "database:\n  host: db.⟪host⟫\n  port: 5432\n  ⟪key⟫: ⟪V⟫\n",
            "⟪ts⟫ DEBUG loaded settings ⟪key⟫=⟪V⟫ from .env",
            'docker run -e "⟪KEY⟫=⟪V⟫" -p 8080:8080 myapp:latest',
        ),
    ),
}
SECRET_WEIGHTS = {
    "assigned": 4,
    "aws_access_key_id": 2,
    "aws_secret_access_key": 2,
    "jwt": 2,
    "pem": 2,
    "github_token": 2,
}
SECRET_NAMES = (
    "api_key", "apiKey", "password", "db_password", "secret", "client_secret", "secret_key", "token",
    "auth_token", "access_token", "passwd",
)  # fmt: skip

ENV_TEMPLATES = (
    "export ⟪env⟫=⟪V⟫",
    "⟪env⟫=⟪V⟫",
    "⟪env⟫: ⟪V⟫",
    '"⟪env_lower⟫": "⟪V⟫",',
    "env:\n  ⟪env⟫: ⟪V⟫\n  LOG_LEVEL: debug\n",
)
BARE_TEMPLATES = (
    "my token is ⟪V⟫ and the request still fails with 403, any idea?",
    "⟪V⟫",
    "oops, pasted the wrong thing: ⟪V⟫. Ignore that.",
)


def secret_value(ctx: Ctx, kind: str) -> Value:
    return Value(SECRET_KINDS[kind].make(ctx), "SECRET", f"secret:{kind}")


def secret_text(ctx: Ctx) -> LabelledText:
    names = tuple(SECRET_KINDS)
    kind = ctx.rng.choices(names, weights=[SECRET_WEIGHTS.get(n, 1) for n in names])[0]
    spec = SECRET_KINDS[kind]
    templates = (
        spec.templates + (ENV_TEMPLATES if spec.env else ()) + (BARE_TEMPLATES if spec.env and spec.bare else ())
    )
    key = ctx.rng.choice(SECRET_NAMES)
    template = (
        ctx.rng.choice(templates)
        .replace("⟪env⟫", spec.env)
        .replace("⟪env_lower⟫", spec.env.lower())
        .replace("⟪KEY⟫", key.upper())
        .replace("⟪key⟫", key)
    )
    return render(ctx, template, lambda c: secret_value(c, kind), f"secret:{kind}")


# ---------------------------------------------------------------------------------------------------------------
# Filler (not PII of a structured entity) and template rendering

# Faker's date()/date_time()/time() draw from "1970 until now", so they change with the clock: the set
# would not be the same twice. Dates come from a fixed window instead.
_DATES = (dt.datetime(2015, 1, 1), dt.datetime(2025, 12, 31, 23, 59, 59))


def when(ctx: Ctx) -> dt.datetime:
    return ctx.fk().date_time_between_dates(*_DATES)


FILLERS: dict[str, Callable[[Ctx], str]] = {
    "name": lambda c: c.any_fk().name(),
    "first": lambda c: c.any_fk().first_name(),
    "company": lambda c: c.any_fk().company(),
    "user": lambda c: c.fk().user_name(),
    "host": lambda c: c.fk().domain_name(),
    "word": lambda c: c.fk().word(),
    "int": lambda c: str(c.rng.randrange(2, 999)),
    "ticket": lambda c: f"#{c.rng.randrange(1000, 99999)}",
    "date": lambda c: when(c).date().isoformat(),
    "ts": lambda c: when(c).isoformat(sep=" ", timespec="seconds"),
    "city": lambda c: c.any_fk().city(),
}

ENTITY_VALUES: dict[str, Callable[[Ctx], Value]] = {
    "EMAIL": email_value,
    "PHONE": phone_value,
    "CREDIT_CARD": card_value,
    "US_SSN": ssn_value,
    "IBAN": iban_value,
    "IP_ADDRESS": ip_value,
    "URL": url_value,
}


def service_account_email(ctx: Ctx) -> Value:
    return Value(
        f"svc-{ctx.fk().word()}@{ctx.fk().word()}-{ctx.rng.randrange(100, 999)}.iam.gserviceaccount.com",
        "EMAIL",
        "email:service-account",
    )


def slot_value(ctx: Ctx, name: str, primary: Callable[[Ctx], Value]) -> Value:
    if name == "V":
        return primary(ctx)
    if name == "SA_EMAIL":
        return service_account_email(ctx)
    if name.startswith("SECRET:"):
        return secret_value(ctx, name.split(":", 1)[1])
    if name in ENTITY_VALUES:
        return ENTITY_VALUES[name](ctx)
    return Value(FILLERS[name](ctx), None, name)


def render(ctx: Ctx, template: str, primary: Callable[[Ctx], Value], source: str) -> LabelledText:
    """Fill every ⟪slot⟫ left to right; each entity value's span is where it was inserted."""
    out: list[str] = []
    spans: list[Span] = []
    kinds: list[str] = []
    pos = 0
    for i, piece in enumerate(SLOT.split(template)):
        if i % 2 == 0:
            out.append(piece)
            pos += len(piece)
            continue
        value = slot_value(ctx, piece, primary)
        if value.entity is not None:
            spans.append(Span(pos, pos + len(value.text), value.entity))
            kinds.append(value.kind)
        out.append(value.text)
        pos += len(value.text)
    return LabelledText("".join(out), spans, kinds, source)


# ---------------------------------------------------------------------------------------------------------------
# Templates: chat, support tickets, logs, code, JSON/YAML/.env, CSV; values at the start, the end, before
# punctuation and quotes; some texts carry several values.

TEMPLATES: dict[str, tuple[str, ...]] = {
    "EMAIL": (
        "Hi, you can reach me at ⟪V⟫ if anything changes.",
        "⟪V⟫ is my work address, please use that one from now on",
        "Please send the invoice to ⟪V⟫.",
        "From: ⟪name⟫ <⟪V⟫>\nSubject: Re: order ⟪ticket⟫\n\nThanks, the parcel arrived today.",
        "CC: ⟪V⟫, ⟪V⟫",
        '{"id": ⟪int⟫, "name": "⟪name⟫", "email": "⟪V⟫", "active": true}',
        "⟪ts⟫ WARN auth: failed login for user=⟪V⟫ from ⟪IP_ADDRESS⟫",
        "Contact: ⟪V⟫ / ⟪PHONE⟫",
        '<a href="mailto:⟪V⟫">Write to us</a>',
        "email: ⟪V⟫\nrole: maintainer",
        "Ticket ⟪ticket⟫ — customer says their email is ⟪V⟫",
        "Reply to the organiser (⟪V⟫) by Friday.",
        "username,email,signup_date\n⟪user⟫,⟪V⟫,⟪date⟫",
        "send_mail(to='⟪V⟫', subject='Welcome aboard')",
        "Can you add ⟪V⟫ to the mailing list? Thanks!",
        "my email is ⟪V⟫",
    ),
    "PHONE": (
        "Call me on ⟪V⟫ after 6pm.",
        "⟪V⟫ is the number for the front desk",
        "Phone: ⟪V⟫",
        "You can text me at ⟪V⟫, or email ⟪EMAIL⟫.",
        '{"customer": "⟪name⟫", "phone": "⟪V⟫"}',
        "Ticket ⟪ticket⟫: caller (⟪V⟫) asked for a refund.",
        "My old number was ⟪V⟫, the new one is ⟪V⟫",
        "name,phone\n⟪name⟫,⟪V⟫",
        "Für Rückfragen erreichen Sie mich unter ⟪V⟫.",
        "Vous pouvez me joindre au ⟪V⟫.",
        'Reach ⟪first⟫ at "⟪V⟫" during office hours',
        "Emergency contact: ⟪name⟫, tel. ⟪V⟫",
        "whatsapp me ⟪V⟫",
    ),
    "CREDIT_CARD": (
        "My card number is ⟪V⟫, expiry 08/27.",
        "⟪V⟫ was charged twice for the same order",
        "Payment failed for card ⟪V⟫ (insufficient funds).",
        '{"card_number": "⟪V⟫", "holder": "⟪name⟫", "cvv": "123"}',
        "please use the visa ending in the numbers below\n⟪V⟫",
        "card=⟪V⟫ amount=42.50 currency=EUR status=declined",
        "Can you refund to ⟪V⟫? I don't use the other card anymore.",
        "Customer ⟪name⟫ paid with ⟪V⟫; billing email ⟪EMAIL⟫.",
        "cc: '⟪V⟫'",
    ),
    "US_SSN": (
        "My SSN is ⟪V⟫.",
        "SSN: ⟪V⟫",
        "⟪V⟫ is the social security number on the W-2",
        "Employee ⟪name⟫ (SSN ⟪V⟫) started on ⟪date⟫.",
        '{"name": "⟪name⟫", "ssn": "⟪V⟫", "dob": "⟪date⟫"}',
        "Please verify the applicant's social security number: ⟪V⟫",
        "ssn=⟪V⟫, phone=⟪PHONE⟫",
        "SSN ⟪V⟫",
    ),
    "IBAN": (
        "Please transfer the deposit to IBAN ⟪V⟫.",
        "⟪V⟫ is the account for the rent",
        "Bankverbindung: ⟪V⟫ (⟪company⟫)",
        '{"iban": "⟪V⟫", "bic": "DEUTDEFF", "holder": "⟪name⟫"}',
        "IBAN: ⟪V⟫",
        "Hi, my new bank account is ⟪V⟫, could you update the payroll?",
        "Virement vers ⟪V⟫, référence ⟪ticket⟫.",
        "payee_iban='⟪V⟫'",
    ),
    "IP_ADDRESS": (
        "⟪ts⟫ INFO GET /api/v1/users 200 from ⟪V⟫",
        "Connection refused from ⟪V⟫, port 22.",
        "The server at ⟪V⟫ keeps timing out",
        '⟪V⟫ - - [10/Oct/2024:13:55:36 +0000] "GET /index.html HTTP/1.1" 200 2326',
        '{"client_ip": "⟪V⟫", "user": "⟪user⟫"}',
        "Whitelist ⟪V⟫ and ⟪V⟫ in the firewall please.",
        "ssh admin@⟪V⟫",
        "Blocked login for ⟪EMAIL⟫ (ip: ⟪V⟫)",
        'allowed_hosts: ["⟪V⟫"]',
        "my IP is ⟪V⟫",
    ),
    "URL": (
        "Use ⟪V⟫ to connect.",
        "DATABASE_URL=⟪V⟫",
        "⟪V⟫ stopped working after the migration",
        'engine = create_engine("⟪V⟫")',
        "The webhook calls ⟪V⟫, is that safe?",
        "See the export at ⟪V⟫.",
        "[download](⟪V⟫)",
        "url: ⟪V⟫\nretries: 3",
        "⟪ts⟫ ERROR fetch failed url=⟪V⟫ status=500",
        "Try opening this link (⟪V⟫) in a private window",
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# Hard negatives: text in which nothing should be found


def _neg_luhn(ctx: Ctx) -> str:
    digits = ctx.fk().credit_card_number(ctx.rng.choice(("visa16", "mastercard", "discover")))
    bad = digits[:-1] + str((int(digits[-1]) + ctx.rng.randrange(1, 10)) % 10)
    assert not luhn_ok(bad)
    shown = ctx.rng.choice((bad, group(bad, (4, 4, 4, 4), " "), group(bad, (4, 4, 4, 4), "-")))
    return ctx.rng.choice(
        (
            f"Tracking code {shown} has not been scanned yet.",
            f"The form rejected {shown} as an invalid card number, which is correct.",
            f"reference: {shown}",
        )
    )


def _neg_ssn(ctx: Ctx) -> str:
    r = ctx.rng
    area, grp, serial = f"{r.randrange(1, 899):03d}", f"{r.randrange(1, 100):02d}", f"{r.randrange(1, 10000):04d}"
    flaw = r.choice(("000", "666", "9xx", "group", "serial"))
    if flaw == "000":
        area = "000"
    elif flaw == "666":
        area = "666"
    elif flaw == "9xx":
        area = f"9{r.randrange(0, 100):02d}"
    elif flaw == "group":
        grp = "00"
    else:
        serial = "0000"
    ssn = f"{area}-{grp}-{serial}"
    return r.choice(
        (f"SSN: {ssn} (test record)", f"the form shows {ssn} which is not a valid SSN", f"id {ssn} failed validation")
    )


def _neg_iban(ctx: Ctx) -> str:
    iban = ctx.fk(ctx.rng.choice(IBAN_LOCALES)).iban()
    check = int(iban[2:4])
    while True:
        check = (check + ctx.rng.randrange(1, 97)) % 97 + 2
        bad = f"{iban[:2]}{check:02d}{iban[4:]}"
        if not iban_ok(bad):
            break
    shown = ctx.rng.choice((bad, group(bad, (4,) * 10, " ")))
    return ctx.rng.choice(
        (f"The bank says {shown} is not a valid IBAN (check digits wrong).", f"iban: {shown}  # typo, rejected")
    )


def _neg_ip(ctx: Ctx) -> str:
    r = ctx.rng
    ip = r.choice(
        (
            f"999.{r.randrange(0, 256)}.{r.randrange(0, 256)}.{r.randrange(0, 256)}",
            f"{r.randrange(256, 1000)}.{r.randrange(0, 256)}.{r.randrange(0, 256)}.{r.randrange(0, 256)}",
            f"{r.randrange(1, 255)}.{r.randrange(0, 256)}.{r.randrange(300, 999)}.{r.randrange(0, 256)}",
            f"{r.randrange(1, 10)}.{r.randrange(0, 10)}.{r.randrange(0, 10)}",
        )
    )
    return r.choice((f"ping: unknown host {ip}", f"{ip} is not a valid address", f"see section {ip} of the spec"))


def _neg_date_time(ctx: Ctx) -> str:
    d = when(ctx).date()
    shown = ctx.rng.choice(
        (d.isoformat(), d.strftime("%d/%m/%Y"), d.strftime("%d.%m.%Y"), d.strftime("%B %d, %Y"), d.strftime("%m/%d/%y"))
    )
    return ctx.rng.choice(
        (
            f"The meeting moved to {shown} at {when(ctx):%H:%M:%S}.",
            f"Deadline: {shown}",
            f"Released on {shown}, patched at {when(ctx):%H:%M:%S} UTC.",
            f"{shown} {when(ctx):%H:%M:%S} backup completed",
        )
    )


def _neg_price(ctx: Ctx) -> str:
    fake, r = ctx.fk(), ctx.rng
    return r.choice(
        (
            f"The total came to {fake.pricetag()}, tax included.",
            f"Prices: €{r.randrange(1, 999)},{r.randrange(10, 100)} or £{r.randrange(1, 99)}.{r.randrange(10, 100)}.",
            f"Budget approved: USD {r.randrange(1, 900)},{r.randrange(0, 1000):03d}.00",
            f"{r.randrange(2, 40)}% off, now {fake.pricetag()}!",
        )
    )


def _neg_version(ctx: Ctx) -> str:
    r = ctx.rng
    v = f"{r.randrange(0, 20)}.{r.randrange(0, 40)}.{r.randrange(0, 30)}"
    return r.choice(
        (
            f"Upgrade to v{v} fixes the crash.",
            f"numpy=={v}\ntorch>={r.randrange(1, 3)}.{r.randrange(0, 9)}",
            f"Python {r.choice(('3.10', '3.11', '3.12'))}.{r.randrange(0, 15)} on Linux, package version {v}",
            f"Chrome/{r.randrange(100, 130)}.0.{r.randrange(1000, 7000)}.{r.randrange(10, 200)} Safari/537.36",
        )
    )


def _neg_order_id(ctx: Ctx) -> str:
    r = ctx.rng
    oid = r.choice(
        (
            f"ORD-{ctx.chars(string.ascii_uppercase + string.digits, 6)}",
            f"INV-{r.randrange(2019, 2026)}-{r.randrange(1, 9999):04d}",
            f"#{r.randrange(100, 99999)}",
            f"PO{r.randrange(10, 99)}-{ctx.chars(string.ascii_uppercase, 3)}",
        )
    )
    return r.choice((f"Your order {oid} has shipped.", f"Invoice {oid} is overdue.", f"Re: {oid} missing item"))


def _neg_isbn(ctx: Ctx) -> str:
    fake = ctx.fk()
    isbn = ctx.rng.choice((fake.isbn13(), fake.isbn10()))
    return ctx.rng.choice((f"ISBN {isbn}", f"The book (ISBN {isbn}) is out of print.", f"isbn: {isbn}"))


def _neg_hash_id(ctx: Ctx) -> str:
    fake, r = ctx.fk(), ctx.rng
    sha, uuid = fake.sha1(), fake.uuid4()
    return r.choice(
        (
            f"Fixed in commit {sha}.",
            f"git cherry-pick {sha[:7]}",
            f"Request id {uuid} failed with 502.",
            f'{{"request_id": "{uuid}", "status": "ok"}}',
            f"commit {sha}\nAuthor: {fake.name()}\n\n    fix typo",
            f"checksum = {fake.sha256()}",
            f"--hash=sha256:{fake.sha256()}",
            f"trace_id={uuid} span_id={ctx.chars(HEX, 16)}",
        )
    )


def _neg_password_prose(ctx: Ctx) -> str:
    return ctx.rng.choice(
        (
            "I forgot my password and the reset link expired.",
            "The password must be at least 12 characters long.",
            "Never share your password or API key with anyone.",
            "Password reset requested for your account.",
            "Where do I put the api key? The docs don't say.",
            "Rotate the secret token every 90 days.",
            "Enter your password:",
            "The token expired, so I logged in again.",
        )
    )


def _neg_placeholder(ctx: Ctx) -> str:
    key = ctx.rng.choice(SECRET_NAMES)
    return ctx.rng.choice(
        (
            f'{key} = "<your-api-key>"',
            f'{key}: "********"',
            f"{key.upper()}=${{{key.upper()}}}",
            f'{key} = os.environ["{key.upper()}"]',
            f'{key} = os.getenv("{key.upper()}")',
            f"{key.upper()}=YOUR_API_KEY_HERE",
            f"{key}: {{{{ .Values.{key} }}}}",
            f'"{key}": "xxxxxxxxxxxxxxxx"',
            f"{key.upper()}=",
            f"{key}: <TOKEN>",
            f'{key} = "changeme"  # replace before deploying',
            f"export {key.upper()}=$(vault read -field=value secret/app/{key})",
        )
    )


def _neg_plain_url(ctx: Ctx) -> str:
    fake = ctx.fk()
    url = ctx.rng.choice(
        (
            f"https://{fake.domain_name()}/{fake.uri_path()}",
            f"https://www.{fake.domain_name()}/search?q={fake.word()}&page={ctx.rng.randrange(1, 9)}",
            f"http://{fake.domain_name()}/{fake.uri_path()}?utm_source=newsletter&utm_medium=email",
            "https://docs.python.org/3/library/re.html",
            f"https://api.{fake.domain_name()}/v1/items?token=YOUR_TOKEN",
            f"https://{fake.domain_name()}/login?next=/dashboard",
            f"https://github.com/{fake.user_name()}/{fake.word()}/pull/{ctx.rng.randrange(1, 9999)}",
        )
    )
    return ctx.rng.choice((f"See {url} for details.", f"Docs: {url}", f"[link]({url})"))


def _neg_short(ctx: Ctx) -> str:
    r = ctx.rng
    return r.choice(
        (
            "In an emergency, call 911.",
            f"Meet me in room {r.randrange(100, 500)}.",
            f"{r.randrange(1, 50)} of {r.randrange(50, 100)} tests passed.",
            f"The service listens on port {r.choice((80, 443, 8080, 5432, 6379))}.",
            f"See PR #{r.randrange(100, 9999)} and issue #{r.randrange(100, 9999)}.",
            f"Flight LH{r.randrange(100, 2000)} departs from gate B{r.randrange(1, 60)}.",
            "the email field expects user@ followed by the domain",
            f"ping @{ctx.fk().user_name()} about the release",
            "Send it to support@ — I'll fill in the domain later.",
        )
    )


def _neg_ml(ctx: Ctx) -> str:
    r = ctx.rng
    return r.choice(
        (
            f"Trained for {r.randrange(1, 5)} epochs with lr {r.choice(('2e-5', '1e-4', '3e-4'))}, warmup 0.03, "
            f"batch {r.choice((8, 16, 32))}.",
            f"eval loss {r.random():.4f}, accuracy {r.random():.3f}, step {r.randrange(100, 50000)}",
            f"LoRA r={r.choice((8, 16, 64))} alpha={r.choice((16, 32))} dropout=0.05 on {r.randrange(1, 9)}x H100",
            f"Coordinates: {r.uniform(-90, 90):.4f}, {r.uniform(-180, 180):.4f}",
            f"color: #{ctx.chars(HEX, 6)}; margin: {r.randrange(0, 40)}px",
        )
    )


NEGATIVES: dict[str, Callable[[Ctx], str]] = {
    "luhn_fail": _neg_luhn,
    "ssn_invalid": _neg_ssn,
    "iban_bad_check": _neg_iban,
    "ip_invalid": _neg_ip,
    "date_time": _neg_date_time,
    "price": _neg_price,
    "version": _neg_version,
    "order_id": _neg_order_id,
    "isbn": _neg_isbn,
    "hash_uuid": _neg_hash_id,
    "password_prose": _neg_password_prose,
    "placeholder": _neg_placeholder,
    "plain_url": _neg_plain_url,
    "short_number": _neg_short,
    "ml_numbers": _neg_ml,
}


# ---------------------------------------------------------------------------------------------------------------


def positive_text(ctx: Ctx, entity: str) -> LabelledText:
    if entity == "SECRET":
        return secret_text(ctx)
    template = ctx.rng.choice(TEMPLATES[entity])
    return render(ctx, template, ENTITY_VALUES[entity], f"{entity.lower()}:{TEMPLATES[entity].index(template)}")


def build_testset(n_per_entity: int = 200, seed: int = 0) -> list[LabelledText]:
    """`n_per_entity` texts per structured entity, then `2 * n_per_entity` hard negatives (no spans)."""
    ctx = make_ctx(seed)
    items = [positive_text(ctx, entity) for entity in STRUCTURED for _ in range(n_per_entity)]
    categories = tuple(NEGATIVES)
    for i in range(2 * n_per_entity):
        category = categories[i % len(categories)]
        items.append(LabelledText(NEGATIVES[category](ctx), [], [], f"neg:{category}"))
    return items
