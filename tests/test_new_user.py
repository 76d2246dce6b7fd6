"""A new user's first session: install the wheel, then run the README's commands as it spells them.

Everything else in the suite imports buildlm from the source tree, from the repository root.
This test does what a user does instead:

1. builds a wheel of the package (offline: no build isolation, the installed setuptools);
2. installs it into a fresh virtual environment. The environment sees the already-installed
   dependencies (torch, numpy, ...) through a ``.pth`` file that lists their site-packages folders
   as plain paths, so no ``.pth`` file *inside* them runs, and the editable install of the
   source tree (a ``.pth`` there) cannot leak in; ``PYTHONPATH`` is dropped too. The test checks
   that ``buildlm`` on the PATH and ``import buildlm`` are the wheel's;
3. from an empty folder (no ``configs/``, no repository) trains with a bundled config by name,
   chats five turns through a pseudo-terminal, and runs every command the README lists (the
   test checks each line is still in the README, word for word, so the two stay in step), with a
   few extra flags appended to keep it short: fewer steps, fewer items.

Commands that need the network (``buildlm download``, ``eval harness``) or several processes
(``--nproc``) are left to their own tests.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _dependency_paths() -> list[str]:
    """The site-packages folders this interpreter imports from (torch, numpy, ...)."""
    return [p for p in dict.fromkeys(sys.path) if p.rstrip("/").endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> SimpleNamespace:
    """A fresh virtual environment with buildlm installed from a freshly built wheel."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"  # build from a copy: the build writes build/ and *.egg-info
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("buildlm-*.whl")

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "_new_user_test_dependencies.pth").write_text("\n".join(_dependency_paths()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), PYTHONNOUSERSITE="1")
    env.update(PYTHONUNBUFFERED="1", TERM="dumb")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        check=True, capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    return SimpleNamespace(venv=venv, python=python, site=site, env=env, wheel=wheel)


def sh(installed, line: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run one command line through bash, as a user would type it."""
    proc = subprocess.run(["bash", "-c", line], cwd=cwd, env=installed.env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"`{line}` failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_venv_runs_the_wheel_not_the_source_tree(installed, tmp_path):
    out = sh(installed, "command -v buildlm; python -c 'import buildlm, sys; print(buildlm.__file__); print(sys.prefix)'", tmp_path)
    script, module, prefix = out.stdout.split()
    assert Path(script) == installed.venv / "bin" / "buildlm"
    assert Path(module).is_relative_to(installed.site) and Path(prefix) == installed.venv


def test_the_wheel_ships_the_configs_and_loads_one_by_name(installed, tmp_path):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for config in ("shakespeare-small", "verdict-tiny", "gpu-shakespeare-small", "finetune/classify", "finetune/instruct", "finetune/dpo"):
        assert f"buildlm/configs/{config}.yaml" in names
    # from a folder that has no configs/: the bundled file, by name
    out = sh(installed, "buildlm train --config shakespeare-small --print_config", tmp_path)
    cfg = yaml.safe_load(out.stdout)
    assert cfg["train"]["time_budget_s"] == 300 and cfg["data"]["inputs"] == ["shakespeare"]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def session(installed, tmp_path_factory) -> SimpleNamespace:
    """An empty folder in which the user has trained a first model with a bundled config."""
    home = tmp_path_factory.mktemp("new-user")
    line = "buildlm train --config verdict-tiny"
    assert line in README
    out = sh(installed, f"{line} --train.time_budget_s 10", home).stdout
    assert "final val loss" in out
    (run,) = [p for p in (home / "runs").iterdir() if (p / "checkpoints").is_dir()]
    assert re.fullmatch(r"\d{8}-\d{6}", run.name), run.name  # a date-time name, never a fixed one
    return SimpleNamespace(home=home, run=f"runs/{run.name}")


def _read_until(fd: int, pattern: re.Pattern, proc: subprocess.Popen, timeout: float) -> str:
    """What the terminal shows until ``pattern`` matches the end of it."""
    seen, deadline = b"", time.monotonic() + timeout
    while not pattern.search(seen.decode("utf-8", "replace")):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {pattern.pattern!r} after {timeout} s; the terminal shows:\n{seen.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other end closed: the program ended
                chunk = b""
            if not chunk:
                code, err = proc.wait(5), proc.stderr.read().decode(errors="replace")[-3000:]
                raise AssertionError(f"chat ended (exit {code}); the terminal shows:\n{seen.decode(errors='replace')}\n{err}")
            seen += chunk
    return seen.decode("utf-8", "replace")


def test_chat_answers_five_turns_in_a_terminal(installed, session):
    line = "buildlm chat --model runs/<date-time>"
    assert line in README
    command = line.replace("runs/<date-time>", session.run) + " --seed 0 --max-new-tokens 12"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        ["bash", "-c", command], cwd=session.home, env=installed.env, stdin=slave, stdout=slave,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    prompt = re.compile(r"(^|\n)> $")
    try:
        _read_until(master, prompt, proc, timeout=120)
        for turn in range(1, 6):
            message = f"Tell me about the picture, number {turn}."
            os.write(master, message.encode() + b"\n")
            shown = _read_until(master, prompt, proc, timeout=120)
            reply = shown.split(message, 1)[-1].rsplit("> ", 1)[0].strip()
            assert reply, f"turn {turn}: no reply; the terminal shows:\n{shown}"
        os.write(master, b"/quit\n")
        assert proc.wait(60) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)


# (the README's line, what stands for what in it, flags appended here to keep the test short)
README_COMMANDS = [
    ("buildlm train --help", {}, ""),
    ('buildlm generate --model runs/<date-time> --prompt "ROMEO." --max-new-tokens 100', {}, "--seed 0"),
    ("buildlm explain --preset gpt2-124m", {}, ""),
    ('buildlm explain --model runs/<date-time> --text "To be, or not to"', {}, ""),
    ("buildlm eval perplexity --model runs/<date-time> --data the-verdict", {}, ""),
    ("buildlm eval choice --model runs/<date-time> --data shakespeare-next-line", {}, "--limit 40"),
    ("buildlm convert --to hf runs/<date-time> --out hf/my-model", {}, ""),
    ("buildlm convert --from hf models/gpt2 --out ckpt/gpt2", {"models/gpt2": "hf/my-model"}, ""),
    ("buildlm eval report --models runs/a runs/b --out report.md", {"runs/a runs/b": "runs/<date-time> ckpt/gpt2"},
     "--data the-verdict --max-tokens 300 --limit 20"),
    ("buildlm finetune classify --config classify --model runs/<date-time>", {}, "--train.max_steps 3"),
    ('buildlm classify --model runs/<classify-run> "To be, or not to be"', {}, ""),
    ("buildlm tokenizer train --input the-verdict --vocab-size 512 --out tokenizer.json", {}, ""),
    ('echo "To be, or not to be" | buildlm tokenizer encode --tokenizer tokenizer.json > ids.txt', {}, ""),
    ("buildlm tokenizer decode --tokenizer tokenizer.json --input ids.txt", {}, ""),
    ("buildlm prepare --input the-verdict --tokenizer tokenizer.json --out data/verdict", {}, ""),
]


def test_every_readme_command_runs_from_an_empty_folder(installed, session):
    home, outputs = session.home, {}
    for line, substitutions, extra in README_COMMANDS:
        assert line in README, f"the README no longer says `{line}`; update this test with it"
        command = line
        for old, new in substitutions.items():
            command = command.replace(old, new)
        command = command.replace("runs/<date-time>", session.run)
        if "<classify-run>" in command:
            (classify_run,) = (home / "runs").glob("classify-*")
            command = command.replace("runs/<classify-run>", f"runs/{classify_run.name}")
        outputs[line] = sh(installed, f"{command} {extra}".strip(), home).stdout

    def out(prefix: str) -> str:
        return next(text for line, text in outputs.items() if line.startswith(prefix))

    assert "--train.time_budget_s" in out("buildlm train --help")
    assert out("buildlm generate").startswith("ROMEO.") and len(out("buildlm generate")) > len("ROMEO.")
    assert "124,439,808" in out("buildlm explain --preset")
    assert "perplexity" in out("buildlm eval perplexity")
    assert "40 items | chance 0.2500" in out("buildlm eval choice")
    assert (home / "hf/my-model/config.json").is_file() and (home / "ckpt/gpt2/model.safetensors").is_file()
    assert (home / "report.md").read_text().count("\n| ") >= 2
    assert "majority-class baseline" in out("buildlm finetune classify")
    assert "To be, or not to be" in out("buildlm classify")
    assert out("buildlm tokenizer decode").strip() == "To be, or not to be"
    assert json.loads((home / "data/verdict/manifest.json").read_text())["splits"]["val"]["tokens"] > 0


def test_serve_answers_on_loopback(installed, session):
    line = "buildlm serve --model runs/<date-time>"
    assert line in README
    command = line.replace("runs/<date-time>", session.run) + " --port 0"
    log = session.home / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=session.home, env=installed.env, stdout=subprocess.PIPE,
            stderr=err, start_new_session=True,
        )  # fmt: skip
    try:
        # it prints the address it listens on, port included, once the model is loaded
        match, seen, deadline = None, b"", time.monotonic() + 120
        while match is None:
            assert time.monotonic() < deadline and proc.poll() is None, f"serve did not start:\n{log.read_text()}"
            if select.select([proc.stdout], [], [], 1.0)[0]:
                seen += os.read(proc.stdout.fileno(), 4096)
                match = re.search(r"at http://([\d.]+):(\d+)", seen.decode(errors="replace"))
        base = f"http://{match[1]}:{match[2]}"
        urlopen = urllib.request.build_opener(urllib.request.ProxyHandler({})).open  # loopback: no proxy
        with urlopen(f"{base}/health", timeout=30) as response:
            assert response.status == 200
        with urlopen(f"{base}/v1/models", timeout=30) as response:
            model = json.loads(response.read())["data"][0]["id"]
        message = {"role": "user", "content": "Hello"}
        body = json.dumps({"model": model, "messages": [message], "max_tokens": 8, "seed": 0}).encode()
        request = urllib.request.Request(f"{base}/v1/chat/completions", body, {"Content-Type": "application/json"})
        with urlopen(request, timeout=120) as response:
            reply = json.loads(response.read())
        assert reply["choices"][0]["message"]["role"] == "assistant"
        assert reply["usage"]["completion_tokens"] >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_readme_python_blocks_run_in_the_installed_package(installed, tmp_path):
    """Every ```python block of the README, run as written by the installed wheel's Python."""
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert any("buildlm.load" in b for b in blocks)
    for block in blocks:
        if "hf/my-model" in block and not (tmp_path / "hf" / "my-model").exists():
            # The README makes this folder just above, with `buildlm convert --to hf
            # runs/<date-time> --out hf/my-model`: the bundled model stands in for the run.
            where = "import buildlm, pathlib; print(pathlib.Path(buildlm.__file__).parent / 'pretrained' / 'shakespeare-small')"
            model = sh(installed, f'python -c "{where}"', tmp_path).stdout.strip()
            sh(installed, f"buildlm convert --to hf {model} --out hf/my-model", tmp_path)
        script = tmp_path / "readme_block.py"
        script.write_text(block, encoding="utf-8")
        out = sh(installed, f"python {script}", tmp_path)
        assert out.stdout.strip(), f"the README block printed nothing:\n{block}"
