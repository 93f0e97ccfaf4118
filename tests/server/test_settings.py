from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from server.flags import parse_args
from server.ledger import Ledger, LedgerUnavailableError
from server.settings import ServerSettings, SettingsError, hash_api_key, ledger_label


def test_flags_override_env_and_env_overrides_defaults() -> None:
    env = {
        "BLACKVIP_PORT": "9001",
        "BLACKVIP_MODEL": "ViT-B-32",
        "BLACKVIP_RANDOM_INIT": "1",
        "BLACKVIP_PRICE_PER_1K_IMAGES": "0.5",
    }
    from_env = parse_args([], env=env)
    assert (from_env.port, from_env.model, from_env.random_init) == (9001, "ViT-B-32", True)
    assert from_env.price_per_1k_images == 0.5
    assert parse_args(["--port", "9002"], env=env).port == 9002


def test_exactly_one_weights_source_is_required() -> None:
    with pytest.raises(SettingsError, match="exactly one weights source"):
        parse_args(["--model", "tiny-vit"], env={})
    with pytest.raises(SettingsError, match="exactly one weights source"):
        parse_args(["--random-init", "--pretrained", "openai"], env={})
    shipped = parse_args([], env={})  # the offline default: the small CLIP made in this repository
    assert shipped.model == "toy-digits" and shipped.weights_label == "checkpoint:toy-digits.pt"
    assert parse_args(["--pretrained", "openai"], env={}).weights_label == "openai"
    assert parse_args(["--checkpoint", "/x/w.pt"], env={}).weights_label == "checkpoint:w.pt"


def test_keys_from_env_and_file_are_kept_only_as_hashes(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nfile-key\n\n")
    settings = parse_args(
        ["--random-init", "--keys-file", str(keys_file)], env={"BLACKVIP_API_KEYS": "a, b,"}
    )
    # SHA-256 of each key, computed here rather than by the function under test
    assert settings.api_key_hashes == {hashlib.sha256(k.encode()).hexdigest() for k in ("a", "b", "file-key")}
    assert hash_api_key("a") == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
    saved = settings.public_dict()
    assert saved["api_keys"] == 3 and "file-key" not in str(saved) and "api_key_hashes" not in saved


def test_bad_values_are_reported() -> None:
    with pytest.raises(SettingsError, match="keys file"):
        parse_args(["--random-init", "--keys-file", "/no/such/file"], env={})
    with pytest.raises(SettingsError, match="'many'"):
        parse_args(["--random-init"], env={"BLACKVIP_MAX_BATCH_IMAGES": "many"})
    with pytest.raises(SystemExit):
        parse_args(["--random-init", "--device", "tpu"], env={})


def test_empty_env_values_count_as_unset() -> None:
    env = {
        "BLACKVIP_PRETRAINED": "",
        "BLACKVIP_CHECKPOINT": "",
        "BLACKVIP_RANDOM_INIT": "1",
        "BLACKVIP_PORT": "",
    }
    settings = parse_args([], env=env)
    assert settings.random_init and settings.pretrained is None and settings.checkpoint is None
    assert settings.port == 8000


@pytest.mark.parametrize("source", ["flag", "env"])
def test_a_postgresql_ledger_url_stays_a_url_and_its_password_is_never_shown(source: str) -> None:
    url = "postgresql://blackvip:hunter2@db.example:5432/blackvip"
    argv = ["--model", "tiny-vit", "--random-init"]
    settings = (
        parse_args([*argv, "--ledger", url], env={})
        if source == "flag"
        else (parse_args(argv, env={"BLACKVIP_LEDGER": url}))
    )
    assert settings.ledger == url  # not a Path, which would fold the // of the URL
    shown = settings.public_dict()["ledger"]
    assert shown == "postgresql://blackvip:***@db.example:5432/blackvip" and "hunter2" not in str(
        settings.public_dict()
    )
    assert parse_args([*argv, "--ledger", "runs/l.sqlite3"], env={}).ledger == Path("runs/l.sqlite3")


@pytest.mark.parametrize(
    "value", ["postgresql:/blackvip@127.0.0.1:35071/blackvip", "postgres:db", "postgresql://u@h:port/db"]
)
def test_a_ledger_that_means_postgresql_but_is_no_url_is_refused(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once opened as a SQLite path (pathlib folds ``//``): an empty ledger in a folder named
    ``postgresql:``, the debris issue 24 found committed."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--random-init", "--ledger", value], env={})
    assert exit_info.value.code == 2
    said = capsys.readouterr().err.splitlines()[-1]
    assert f"--ledger: the ledger {'URL ' if '//' in value else ''}'{value}'" in said, said
    with pytest.raises(SettingsError, match="not valid"):
        parse_args(["--random-init"], env={"BLACKVIP_LEDGER": value})
    with pytest.raises(ValueError, match="given as a file path"):  # pydantic's ValidationError
        ServerSettings(ledger=Path("postgresql://u@127.0.0.1/db"))
    with pytest.raises(LedgerUnavailableError, match="PostgreSQL URL"):
        Ledger(Path("postgresql://u@127.0.0.1/db"))
    assert list(tmp_path.iterdir()) == []  # no file or folder was made


def test_a_bad_ledger_url_is_named_without_its_password() -> None:
    with pytest.raises(SettingsError, match="not valid") as info:
        parse_args(["--random-init"], env={"BLACKVIP_LEDGER": "postgresql://u:hunter2@h:port/db"})
    assert "hunter2" not in str(info.value) and "u:***@h:port" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:hunter2@127.0.0.1:5432/db",
        "postgresql://u@127.0.0.1/db?sslmode=disable&password=hunter2",
        "postgresql://u@127.0.0.1/db?PASSWORD=hunter2",
    ],
)
def test_a_password_in_the_ledger_url_is_never_shown(url: str) -> None:
    """Where the URL is shown: the settings saved with a run and logged at start, and error messages."""
    assert "hunter2" not in ledger_label(url) and "***" in ledger_label(url)
    saved = parse_args(["--random-init", "--ledger", url], env={}).public_dict()
    assert "hunter2" not in json.dumps(saved, default=str)


def test_a_multi_host_ledger_url_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match="several hosts"):
        parse_args(["--random-init"], env={"BLACKVIP_LEDGER": "postgresql://u:pw@h1:5432,h2:5433/db"})


def test_published_on_stands_for_the_bind_address_only_inside_a_container() -> None:
    """``--published-on 127.0.0.1`` once made ``--host 0.0.0.0`` pass the open-API check on a machine's
    own network, where every interface then served an open API."""
    bare = ["--random-init", "--host", "0.0.0.0", "--published-on", "127.0.0.1"]
    with pytest.raises(SettingsError, match="refusing to serve on 0.0.0.0"):
        parse_args(bare, env={})
    assert parse_args([*bare, "--in-container"], env={}).host == "0.0.0.0"  # the port mapping decides
    assert parse_args(bare, env={"BLACKVIP_IN_CONTAINER": "1"}).in_container
    with pytest.raises(SettingsError, match="refusing to serve on 10.0.0.5"):
        parse_args(["--random-init", "--host", "127.0.0.1", "--published-on", "10.0.0.5"], env={})
    assert parse_args([*bare, "--api-keys", "k"], env={}).host == "0.0.0.0"  # keyed: anywhere
    assert parse_args([*bare, "--allow-open"], env={}).allow_open


def test_a_memory_budget_that_cannot_hold_one_request_is_refused() -> None:
    argv = ["--random-init", "--max-request-bytes", str(8 * 2**20)]
    with pytest.raises(SettingsError, match="--memory-budget-mb 8 cannot hold one request of 8388608 bytes"):
        parse_args([*argv, "--memory-budget-mb", "8"], env={})  # the body fits; its working memory does not
    assert parse_args([*argv, "--memory-budget-mb", "9"], env={}).memory_budget_mb == 9
    info = parse_args(["--random-init"], env={}).connection_limits
    assert (info.max_connections, info.max_uploads_per_key, info.memory_budget_mb) == (1024, 4, 512)


def test_access_levels_and_their_prices_from_flags_and_env() -> None:
    from shared.access import AccessLevel

    default = parse_args([], env={})
    assert default.access_levels == tuple(AccessLevel) and default.level_prices == {}
    assert {p.level: p.price_per_1k_images for p in default.level_price_list} == dict.fromkeys(
        AccessLevel, 1.0
    )
    env = {"BLACKVIP_ACCESS_LEVELS": "logits,label,top-k", "BLACKVIP_LEVEL_PRICES": "label=0.2,top-k=0.5"}
    settings = parse_args(["--level-price", "label=0.1", "--price-per-1k-images", "2"], env=env)
    assert settings.access_levels == (AccessLevel.LOGITS, AccessLevel.LABEL, AccessLevel.TOP_K)
    assert settings.price_for(AccessLevel.LABEL) == 0.1  # the flag comes after the env's pairs
    assert settings.price_for(AccessLevel.TOP_K) == 0.5 and settings.price_for(AccessLevel.LOGITS) == 2.0
    assert [p.level for p in settings.level_price_list] == list(settings.access_levels)
    assert settings.public_dict()["level_prices"] == {"label": 0.1, "top-k": 0.5}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--access-levels", "logits,everything"], "no access level 'everything'"),
        (["--access-levels", "logits,logits"], "each once"),
        (["--level-price", "label"], "LEVEL=PRICE"),
        (["--level-price", "label=-1"], "LEVEL=PRICE"),
        (["--level-price", "label=inf"], "LEVEL=PRICE"),
        (["--access-levels", "logits", "--level-price", "label=0.5"], "does not offer"),
    ],
)
def test_bad_access_level_settings_are_named(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises((SettingsError, SystemExit)) as refused:
        parse_args(argv, env={})
    said = str(refused.value) if isinstance(refused.value, SettingsError) else capsys.readouterr().err
    assert message in said
