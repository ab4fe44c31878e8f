"""One config system and one error style for every command.

Every command's settings are a dataclass with a comment or help text per field, parsed the
TRL way (``trl.TrlParser``): ``--config FILE.yaml`` sets fields, ``--field value`` on the
command line overrides them, unknown keys are refused. A config that nests the configs of
other stages (the pipeline's ``reward_model:`` and ``ppo:`` sections) is parsed with the
same rules section by section, and ``--section.field value`` overrides one nested field.

A config class may rename its fields without breaking older files and commands: its
``_renamed_fields = {"old": "new"}`` are accepted as aliases (YAML keys, ``--old`` flags,
``--section.old`` overrides) with a one-line deprecation warning on stderr naming the new
name. A rename whose units change (``num_steps`` iterations -> ``total_episodes``) is listed
in ``_converted_fields = {"old": "new"}`` instead and converted by the class's
``_convert_deprecated(values, where)`` on the merged mapping, where every other value is known.

Every problem a user can fix is a ``ConfigError`` whose message says where (file, key,
line, command-line flag) and what was expected; ``run_main`` prints it as one line
``error: <where>: <what was expected>`` on stderr and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import huggingface_hub.constants
import yaml
from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations
from trl import TrlParser


class ConfigError(ValueError):
    """A bad configuration value, file or input: ``<where>: <what was expected>``.

    ``ConfigError(message)`` with one argument keeps a message that already says where
    (``"file.jsonl:3: ..."``); ``where`` is then its part before the first ``": "``."""

    def __init__(self, where: str, expected: str | None = None):
        message = where if expected is None else f"{where}: {expected}"
        super().__init__(message)
        if expected is None:
            where, _, expected = message.partition(": ")
        self.where, self.expected = where, expected


# The trackers the package's [trackers] extra installs; others (wandb, mlflow, ...) work
# when the user installs them.
EXTRA_TRACKERS = ("tensorboard", "trackio")


def check_report_to(report_to: list[str] | str | None) -> None:
    """Refuse a tracker that transformers does not know or that is not installed, now:
    transformers finds out only when the Trainer is built, after the model has loaded.
    ``report_to`` is `TrainingArguments.report_to` after its `__post_init__` (a list)."""
    requested = [report_to] if isinstance(report_to, str) else list(report_to or [])
    available = set(get_available_reporting_integrations())
    for name in requested:
        if name in ("none", "all"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            raise ConfigError("--report_to", f"unknown tracker {name!r}; expected one of "
                                             f"{', '.join(INTEGRATION_TO_CALLBACK)} or none")
        if name not in available:
            install = ("pip install 'rlhf-toolkit[trackers]' (tensorboard and trackio)" if name in EXTRA_TRACKERS
                       else f"install {name}")
            raise ConfigError("--report_to", f"{name} is not installed; expected an installed tracker: {install}")



def offline_by_default() -> None:
    """Models and data come from local files only unless the user opts in with
    ``HF_HUB_OFFLINE=0``. Called by every entry point (``rlhf ...`` and each
    ``python -m ...``); huggingface_hub reads its offline flag at import, so the module
    constant is set as well as the environment (subprocesses inherit the latter)."""
    if os.environ.get("HF_HUB_OFFLINE") is None and os.environ.get("TRANSFORMERS_OFFLINE") is None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a command's ``main`` offline by default; a ``ConfigError`` becomes
    ``error: ...`` on stderr and exit code 2 (no traceback)."""
    offline_by_default()
    try:
        return main(argv) or 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


class _ArgumentError(ConfigError):
    """An argparse error already turned into a ConfigError by ``_Parser.error``."""


def yaml_mapping(text: str) -> dict:
    """A ``dict`` field's command-line value: a YAML (or JSON) mapping, e.g. ``"{eps: 0.2}"``."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"expected a YAML mapping such as '{{eps: 0.2}}', got {text!r}")
    return value


_TYPE_NAMES = {"int": "an integer", "float": "a number", "string_to_bool": "true or false",
               "yaml_mapping": "a YAML mapping such as {eps: 0.2}"}


class _Parser(TrlParser):
    """TrlParser whose argparse errors raise ConfigError (naming the flag, or the config
    file's key when the bad value came from YAML) instead of printing usage, and whose
    ``dict`` fields read a YAML mapping from the command line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.source, self.argv = "command line", []  # set by _build: where values came from
        for action in self._actions:
            if action.type is dict:
                action.type = yaml_mapping

    def error(self, message: str):
        flag, sep, expected = message.removeprefix("argument ").partition(": ")
        if not sep or not flag.startswith("--"):
            raise _ArgumentError(self.source, message)
        flag = flag.split("/")[0]
        kind, _, value = expected.removeprefix("invalid ").partition(" value: ")
        if value and kind in _TYPE_NAMES:  # "invalid int value: 'four'"
            expected = f"expected {_TYPE_NAMES[kind]}, got {value}"
        if _flag_given(flag, self.argv) or self.source == "command line":
            raise _ArgumentError(flag, expected)
        raise _ArgumentError(f"{self.source}: {flag[2:]}", expected)


def _flag_given(flag: str, argv: list[str]) -> bool:
    return any(token == flag or token.startswith(flag + "=") for token in argv)


class ArgumentParser(argparse.ArgumentParser):
    """argparse for a command whose flags are not a config dataclass (the labelling app's
    ``--config`` names a project file, not a file of the flags): errors are ConfigErrors."""

    def error(self, message: str):
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown != message:
            flags = ", ".join(sorted(o for o in self._option_string_actions if o.startswith("--")))
            raise ConfigError(unknown.split()[0], f"unknown flag; expected one of {flags}")
        flag, sep, expected = message.removeprefix("argument ").partition(": ")
        if sep and flag.startswith("-"):
            raise ConfigError(flag.split("/")[0], expected)
        raise ConfigError("command line", message)


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file; a missing file, bad YAML or a non-mapping is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "config file not found (expected an existing YAML file)")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), "expected a UTF-8 text file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(where, f"malformed YAML: {getattr(err, 'problem', err)} (expected valid YAML)") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(str(path), f"expected a mapping of config keys, got {type(values).__name__}")
    return values


def field_names(config_class) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class) if f.init]


def deprecation_warning(where: str, old: str, new: str, converted: bool = False) -> None:
    """One line on stderr: the old name still works for one release; the new one is named."""
    units = " (in other units; the value is converted)" if converted else ""
    print(f"warning: {where}: '{old}' is deprecated, use '{new}'{units} instead; the old name goes in the next "
          "release", file=sys.stderr)


def _aliases(config_class) -> tuple[dict[str, str], dict[str, str]]:
    """(plain renames, unit-converting renames) of a config class: old name -> new name."""
    return getattr(config_class, "_renamed_fields", {}), getattr(config_class, "_converted_fields", {})


def rename_deprecated(config_class, values: dict, where: str) -> dict:
    """``values`` with old keys under their new names (warned); converted keys are kept for
    ``convert_deprecated``. Old and new name of one field in the same mapping is an error."""
    renamed, converted = _aliases(config_class)
    values = dict(values)
    for old, new in {**renamed, **converted}.items():
        if old not in values:
            continue
        if new in values:
            raise ConfigError(f"{where}: {old}", f"give only '{new}' (the new name of '{old}'), not both")
        deprecation_warning(where, old, new, converted=old not in renamed)
        if old in renamed:
            values[new] = values.pop(old)
    return values


def merge_layers(config_class, *layers: dict) -> dict:
    """Later mappings override earlier ones; a converted old name in a later layer replaces
    its new name from an earlier layer and vice versa (``num_steps`` over ``total_episodes``)."""
    _, converted = _aliases(config_class)
    merged: dict = {}
    for layer in layers:
        for old, new in converted.items():
            if old in layer:
                merged.pop(new, None)
            if new in layer:
                merged.pop(old, None)
        merged.update(layer)
    return merged


def convert_deprecated(config_class, values: dict, where: str, flags: tuple[str, ...] = ()) -> dict:
    """Old names whose units changed, converted by the class (after every layer is merged).
    An error about one of ``flags`` (old names given on the command line) names the flag."""
    _, converted = _aliases(config_class)
    if not any(old in values for old in converted):
        return values
    try:
        return config_class._convert_deprecated(dict(values), where)
    except ConfigError as err:
        name = err.where.rpartition(": ")[2]
        if name in flags:
            raise ConfigError(f"--{name}", err.expected) from None
        raise


def _split_deprecated_flags(config_class, argv: list[str], where: str) -> tuple[list[str], dict]:
    """Command-line aliases: ``--old v`` becomes ``--new v`` (argparse still types the value);
    a converted ``--old v`` is taken out into a mapping (values as text) for ``convert_deprecated``."""
    renamed, converted = _aliases(config_class)
    out, taken = [], {}
    index = 0
    while index < len(argv):
        token = argv[index]
        name, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        name = name.replace("-", "_")  # argparse also took --batch-size for batch_size
        if name in renamed:
            deprecation_warning(where, f"--{name}", f"--{renamed[name]}")
            out.append(f"--{renamed[name]}{eq}{value}")
        elif name in converted:
            deprecation_warning(where, f"--{name}", f"--{converted[name]}", converted=True)
            if not eq:
                if index + 1 < len(argv) and not argv[index + 1].startswith("--"):
                    index += 1
                    value = argv[index]
                else:  # a bare boolean flag
                    value = "true"
            taken[name] = value
        else:
            out.append(token)
        index += 1
    return out, taken


def _check_keys(config_class, values: dict, where: str) -> None:
    known = set(field_names(config_class))
    unknown = sorted(str(key) for key in values if key not in known)
    if unknown:
        raise ConfigError(where, f"unknown key {unknown[0]!r}; expected fields of {config_class.__name__} "
                                 f"(see docs/config/)")


def _attach_negative_numbers(argv: list[str]) -> list[str]:
    """``--learning_rate -1e-3`` -> ``--learning_rate=-1e-3``: argparse would read ``-1e-3``
    as an option (it only recognises plain negative numbers such as ``-5`` or ``-0.5``)."""
    joined: list[str] = []
    for token in argv:
        if joined and joined[-1].startswith("--") and "=" not in joined[-1] and re.fullmatch(r"-\.?\d.*", token):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def _build(parser: _Parser, argv: list[str], where: str):
    argv = _attach_negative_numbers(argv)
    known = set(field_names(parser.dataclass_types[0]))
    for token in argv:
        flag = token.split("=")[0]
        if token.startswith("--") and flag not in parser._option_string_actions:  # aliases and --no_<flag> included
            raise ConfigError(flag, f"unknown flag; expected a field of {parser.dataclass_types[0].__name__} "
                                    f"(see docs/config/)")
    parser.source, parser.argv = where, argv
    try:
        (config,) = parser.parse_args_into_dataclasses(args=argv)
    except _ArgumentError:
        raise
    except (ValueError, TypeError) as err:  # a dataclass's __post_init__ check: "field: expected ..."
        name, sep, expected = str(err).partition(": ")
        if not (sep and name in known):
            raise ConfigError(where, str(err)) from None
        if _flag_given(f"--{name}", argv) or where == "command line":
            raise ConfigError(f"--{name}", expected) from None
        raise ConfigError(f"{where}: {name}", expected) from None
    return config


def _pop_config_file(argv: list[str]) -> str | None:
    """Remove ``--config FILE`` from ``argv`` and return FILE (None without ``--config``)."""
    if "--config" not in argv:
        return None
    index = argv.index("--config")
    if index + 1 >= len(argv):
        raise ConfigError("--config", "a YAML file path")
    path = argv[index + 1]
    del argv[index:index + 2]
    return path


def _parser_with_values(config_class, values: dict, where: str, prog: str | None = None) -> _Parser:
    """A parser whose defaults are ``values`` (from a file or a section); unknown keys refused."""
    _check_keys(config_class, values, where)
    parser = _Parser(config_class, prog=prog)
    parser.set_defaults_with_config(**values)
    return parser


def parse_config(config_class, argv: list[str] | None = None, prog: str | None = None):
    """``--config FILE.yaml`` plus ``--field value`` overrides into ``config_class``
    (TRL's parser and rules; YAML keys that are not fields are refused)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path = _pop_config_file(argv)
    where = path or "command line"
    argv, flag_values = _split_deprecated_flags(config_class, argv, "command line")
    values = merge_layers(config_class, rename_deprecated(config_class, read_yaml(path) if path else {}, where),
                          flag_values)
    values = convert_deprecated(config_class, values, where, flags=tuple(flag_values))
    return _build(_parser_with_values(config_class, values, where, prog), argv, where)


def config_from_dict(config_class, values: dict, where: str):
    """``config_class`` from a mapping (a YAML section) with the same rules as
    ``parse_config``: unknown keys refused (old names accepted with a warning), values
    checked by the dataclass."""
    values = convert_deprecated(config_class, rename_deprecated(config_class, values, where), where)
    return _build(_parser_with_values(config_class, values, where), [], where)


def parse_nested_config(config_class, sections: dict[str, type], argv: list[str] | None = None,
                        prog: str | None = None, section_defaults: dict[str, dict] | None = None,
                        derived: Callable[[Any], dict[str, dict]] | None = None) -> tuple[Any, dict[str, Any]]:
    """A config whose YAML nests other configs: ``sections`` maps a key (``ppo``) to its
    dataclass. A section may name a base file (``config: configs/ppo/quickstart.yaml``)
    whose values its other keys override; ``--ppo.learning_rate 1e-5`` overrides one field
    from the command line. ``section_defaults`` are used for a section the file leaves out
    (and without ``--config``). ``derived(top)`` returns the fields the composing command
    sets itself (file paths between stages); a user value for one of them is refused.
    Returns the top-level config and one config per section."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path = _pop_config_file(argv)
    values = read_yaml(path) if path else {}
    path = path or "command line"
    nested, overrides = {}, {}
    for name in sections:
        section = values.pop(name, None)
        if section is None:
            section = (section_defaults or {}).get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {name}", "a mapping of fields")
        nested[name], overrides[name] = dict(section), {}
    top_argv = []
    while argv:
        flag = argv.pop(0)
        if flag in ("-h", "--help"):
            top_argv.append(flag)
            continue
        if not flag.startswith("--") or not argv:
            raise ConfigError("command line", f"'--field value' overrides, got {flag!r}")
        name, dot, key = flag[2:].partition(".")
        if dot and name in sections:
            overrides[name][key] = yaml.safe_load(argv.pop(0))
        else:
            top_argv += [flag, argv.pop(0)]
    top_argv, flag_values = _split_deprecated_flags(config_class, top_argv, "command line")
    values = merge_layers(config_class, rename_deprecated(config_class, values, path), flag_values)
    values = convert_deprecated(config_class, values, path, flags=tuple(flag_values))
    top = _build(_parser_with_values(config_class, values, path, prog), top_argv, path)
    fixed = derived(top) if derived else {}
    configs = {}
    for name, section_class in sections.items():
        where = f"{path}: {name}"
        section = rename_deprecated(section_class, nested[name], where)
        cli = rename_deprecated(section_class, overrides[name], f"--{name}")
        base = cli.pop("config", section.pop("config", None))
        base_values = rename_deprecated(section_class, read_yaml(base), str(base)) if base else {}
        _check_keys(section_class, {k: v for k, v in base_values.items() if k not in _aliases(section_class)[1]},
                    str(base))
        for key in fixed.get(name, {}):
            if key in section or key in cli:
                raise ConfigError(f"{where}.{key}", f"no value: {prog or 'this command'} sets it itself")
        merged = merge_layers(section_class, base_values, section, cli, fixed.get(name, {}))
        merged = convert_deprecated(section_class, merged, where)
        configs[name] = _build(_parser_with_values(section_class, merged, where), [], where)
    return top, configs
