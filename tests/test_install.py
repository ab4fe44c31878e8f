"""Issue 13, defect 6: what `pip install rlhf-toolkit` brings, the extras, and the lock file."""

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Top-level import names of each extra's packages: none may be imported by the base stages.
EXTRA_MODULES = {"app": ["gradio", "sklearn", "statsmodels", "krippendorff", "fastapi"],
                 "robot": ["mujoco", "gymnasium", "imageio", "imageio_ffmpeg"],
                 "trackers": ["tensorboard", "trackio"]}
BASE_STAGES = ["reward_model.train", "reward_model.evaluate", "ppo.train", "pipeline.end_to_end", "pipeline.rm_demo",
               "pipeline.sample_demo", "pipeline.convert", "pipeline.cli"]


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_base_install_is_what_reward_models_and_ppo_need():
    base = names(PYPROJECT["dependencies"])
    extras = {name: names(reqs) for name, reqs in PYPROJECT["optional-dependencies"].items()}
    assert {"gradio", "mujoco", "gymnasium", "tensorboard", "trackio", "scikit-learn", "pytest"}.isdisjoint(base)
    assert {"torch", "transformers", "trl", "datasets", "accelerate", "peft", "gguf"} <= base
    torch = next(Requirement(r) for r in PYPROJECT["dependencies"] if r.startswith("torch"))
    assert str(torch.specifier) == ">=2.4"  # a range; the Makefile installs the exact CPU build
    assert {"gradio", "scikit-learn", "statsmodels", "krippendorff"} <= extras["app"]
    assert {"mujoco", "gymnasium", "imageio", "imageio-ffmpeg"} <= extras["robot"]
    assert extras["trackers"] == {"tensorboard", "trackio"}
    assert PYPROJECT["optional-dependencies"]["all"] == ["rlhf-toolkit[app,robot,trackers]"]
    assert "rlhf-toolkit[all]" in PYPROJECT["optional-dependencies"]["dev"] and "pytest" in extras["dev"]


def test_the_base_stages_import_no_extra():
    result = run_python(f"import sys\nimport {', '.join(BASE_STAGES)}\n"
                        "print(sorted({m.split('.')[0] for m in sys.modules}))")
    assert result.returncode == 0, result.stderr
    loaded = set(eval(result.stdout))
    assert {module for modules in EXTRA_MODULES.values() for module in modules} & loaded == set()
    assert {"transformers", "trl", "torch"} <= loaded  # the check can fail: the import really ran


BLOCK = """
import sys
class Block:
    '''Make {module} look uninstalled.'''
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
"""


def test_a_stage_without_its_extra_names_the_extra():
    for package, module, extra in [("labeling_app", "gradio", "app"), ("robot", "mujoco", "robot")]:
        result = run_python(BLOCK.format(module=module) + f"import {package}")
        assert result.returncode == 1
        assert re.search(rf"ModuleNotFoundError: the .* needs the \[{extra}\] extra \(missing: {module}\): "
                         rf"pip install 'rlhf-toolkit\[{extra}\]'\n$", result.stderr), result.stderr


def test_rlhf_commands_without_their_extra_say_which_one():
    for command, module, extra in [("label", "gradio", "app"), ("annotate", "gradio", "app"),
                                   ("loop", "gradio", "app"), ("robot", "mujoco", "robot")]:
        result = run_python(BLOCK.format(module=module) + f"from pipeline.cli import main\n"
                                                          f"sys.exit(main([{command!r}, '--help']))")
        assert result.returncode == 2, result.stderr
        assert result.stderr == (f"error: rlhf {command}: needs the [{extra}] extra: pip install "
                                 f"'rlhf-toolkit[{extra}]' (missing module {module})\n")
    # A base command is not affected by a missing extra.
    result = run_python(BLOCK.format(module="gradio") + "from pipeline.cli import main\nmain(['train-rm', '--help'])")
    assert result.returncode == 0 and "--report_to" in result.stdout


def test_make_installs_the_locked_versions_and_this_environment_is_them():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\): pyproject.toml constraints.txt$", makefile, re.M)
    installs = re.findall(r"pip install (.*)$", makefile, re.M)
    assert all("-c constraints.txt" in line for line in installs if "--upgrade pip" not in line)
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    project = names(PYPROJECT["dependencies"]) | set().union(
        *(names(reqs) for reqs in PYPROJECT["optional-dependencies"].values())) - {"rlhf-toolkit"}
    assert project <= set(pins) and pins["torch"] == "2.13.0"
    stale = {name: (pin, metadata.version(name)) for name, pin in pins.items()
             if metadata.version(name).split("+")[0] != pin}
    assert stale == {}, "this environment differs from constraints.txt: run `make install`, or regenerate the file"
