"""Bad input to every CLI: one `error:` line that names the file or flag, no traceback, no damage.

Each case runs the CLI as a user would, in a subprocess, on a copy of a real trained workdir
where one is needed, and checks that the files that were there are left as they were.
"""

import hashlib
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATASET
from PIL import Image

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPOSITORY / "tests" / "fixtures"
STAGE1 = "--config=configs/stage1.py:debug"
STAGE2 = "--config=configs/stage2.py:debug"


def run(module, *flags):
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, flags)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPOSITORY,
    )


def snapshot(directory):
    """{relative path: sha256} of every file under `directory`."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(pathlib.Path(directory).rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def files(tmp_path):
    """A folder of bad files, and a copy of nothing else."""
    directory = tmp_path / "files"
    directory.mkdir()
    (directory / "empty").write_bytes(b"")
    (directory / "latin1.txt").write_bytes("a small bird.\nfrom Mal\xe9.\n".encode("latin-1"))
    (directory / "blank.txt").write_text("\n  \n\n")
    np.save(directory / "nan.npy", np.array([[0.1] * 384, [np.nan] * 384], np.float32))
    np.save(directory / "other_encoder.npy", np.zeros((2, 1024), np.float32))
    whole = (FIXTURES / "pytorch_fid_random.pth").read_bytes()
    (directory / "cut.pth").write_bytes(whole[: len(whole) // 2])
    (directory / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 64)).save(directory / "images" / name)
    (directory / "broken").mkdir()
    (directory / "broken" / "x.png").write_bytes(b"not a png")
    return directory


@pytest.fixture
def workdir(stage1_run, tmp_path):
    """A copy of the trained Stage-I debug workdir, free to be damaged."""
    copy = tmp_path / "stage1"
    shutil.copytree(stage1_run[1], copy)
    return copy


def data_flags(data_dir):
    return [f"--config.data.dataset={DATASET}", f"--config.data.data_dir={data_dir}"]


# (CLI, its flags as a function of (files, workdir, data_dir), what stderr must say)
CASES = {
    "unknown config name": (
        "stackgan_jax.main",
        lambda f, w, d: ["--config=configs/stage1.py:nosuch", f"--workdir={w}"],
        "flag --config=configs/stage1.py:nosuch: Unknown config name 'nosuch'; choose one of",
    ),
    "unknown config field": (
        "stackgan_jax.main",
        lambda f, w, d: [STAGE1, "--config.train.nosuch=1", f"--workdir={w}"],
        "the config has no field nosuch; check the overrides --config.train.nosuch",
    ),
    "config value of the wrong type": (
        "stackgan_jax.main",
        lambda f, w, d: [STAGE1, "--config.train.global_batch_size=abc", f"--workdir={w}"],
        "flag --config.train.global_batch_size=abc: invalid literal for int()",
    ),
    "missing Stage-I workdir": (
        "stackgan_jax.main",
        lambda f, w, d: [
            STAGE2,
            *data_flags(d),
            f"--config.stage1_workdir={f / 'nowhere'}",
            f"--workdir={f / 'stage2'}",
        ],
        "No Stage-I checkpoints in",
    ),
    "workdir of the other architecture": (
        "stackgan_jax.main",
        lambda f, w, d: [STAGE1, *data_flags(d), "--config.model.arch=pytorch", f"--workdir={w}"],
        "does not fit this config",
    ),
    "workdir of the other stage": (
        "stackgan_jax.main",
        lambda f, w, d: [STAGE2, *data_flags(d), f"--config.stage1_workdir={w}", f"--workdir={w}"],
        "does not fit this config",
    ),
    "sample: caption file not UTF-8": (
        "stackgan_jax.sample",
        lambda f, w, d: [f"--workdir={w}", f"--text_file={f / 'latin1.txt'}"],
        "latin1.txt is not UTF-8 text: line 2 has the byte 0xe9",
    ),
    "sample: caption file of blank lines": (
        "stackgan_jax.sample",
        lambda f, w, d: [f"--workdir={w}", f"--text_file={f / 'blank.txt'}"],
        "give --text (repeatable), --text_file or --embeddings",
    ),
    "sample: non-finite embeddings": (
        "stackgan_jax.sample",
        lambda f, w, d: [f"--workdir={w}", f"--embeddings={f / 'nan.npy'}"],
        "nan.npy: 1 row(s) hold NaN or infinite values, e.g. row 1",
    ),
    "sample: embeddings of another text encoder": (
        "stackgan_jax.sample",
        lambda f, w, d: [f"--workdir={w}", f"--embeddings={f / 'other_encoder.npy'}"],
        "embeddings must be [N, 384] for this model",
    ),
    "sample: empty embeddings file": (
        "stackgan_jax.sample",
        lambda f, w, d: [f"--workdir={w}", f"--embeddings={f / 'empty'}"],
        "empty is not a .npy array",
    ),
    "sample: not a workdir": (
        "stackgan_jax.sample",
        lambda f, w, d: [f"--workdir={f}", "--text=a bird"],
        "has no checkpoints/ folder",
    ),
    "evaluate: FID weights cut short": (
        "stackgan_jax.evaluate",
        lambda f, w, d: [
            f"--workdir={w}",
            f"--data_dir={d}",
            "--metrics=fid",
            "--num_samples=8",
            f"--fid_weights={f / 'cut.pth'}",
        ],
        "cut.pth is incomplete: it ends at byte",
    ),
    "evaluate: unknown metric": (
        "stackgan_jax.evaluate",
        lambda f, w, d: [f"--workdir={w}", f"--data_dir={d}", "--metrics=nosuch"],
        "unknown metrics ['nosuch']",
    ),
    "evaluate: a workdir and an images dir": (
        "stackgan_jax.evaluate",
        lambda f, w, d: [f"--workdir={w}", f"--images_dir={f / 'images'}"],
        "pass one of --workdir (a checkpoint) and --images_dir (images)",
    ),
    "evaluate: captions not one per image": (
        "stackgan_jax.evaluate",
        lambda f, w, d: [f"--images_dir={f / 'images'}", f"--captions={f / 'blank.txt'}"],
        "blank.txt has 3 lines for the 2 images of",
    ),
    "evaluate: a file that is not an image": (
        "stackgan_jax.evaluate",
        lambda f, w, d: [f"--images_dir={f / 'broken'}", "--metrics=is"],
        "x.png is not a readable image",
    ),
    "evaluate: CLIP score of images without captions": (
        "stackgan_jax.evaluate",
        lambda f, w, d: [f"--images_dir={f / 'images'}", "--metrics=clip_score"],
        "clip_score scores each image against its caption, and these images have none",
    ),
    "embed: empty caption file": (
        "stackgan_jax.text.embed",
        lambda f, w, d: [f"--input={f / 'empty'}", f"--output={f / 'out.npy'}"],
        "empty holds no captions",
    ),
    "embed: caption file not UTF-8": (
        "stackgan_jax.text.embed",
        lambda f, w, d: [f"--input={f / 'latin1.txt'}", f"--output={f / 'out.npy'}"],
        "latin1.txt is not UTF-8 text: line 2",
    ),
    "pretrained: empty release file": (
        "stackgan_jax.pretrained",
        lambda f, w, d: [
            "--config=configs/stage1.py:birds_pytorch",
            f"--input={f / 'empty'}",
            f"--workdir={f / 'converted'}",
        ],
        "empty is neither a torch.save zip nor a legacy file",
    ),
    "convert_t7: empty file": (
        "stackgan_jax.text.convert_t7",
        lambda f, w, d: [f"--input={f / 'empty'}", f"--output={f / 'out.npz'}"],
        "empty is not a Torch7 file",
    ),
    "prepare: unknown dataset": (
        "stackgan_jax.data.prepare",
        lambda f, w, d: ["--dataset=nosuch", f"--data_dir={f / 'tfds'}"],
        "flag --dataset=nosuch: value should be one of",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_clear_line_and_changes_nothing(case, files, workdir, data_dir):
    module, make_flags, expected = CASES[case]
    before = snapshot(files.parent)
    result = run(module, *make_flags(files, workdir, data_dir))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    after = snapshot(files.parent)
    # Training writes a new TensorBoard events file before it finds the mismatch; nothing else.
    new = {path for path in after.keys() - before.keys() if "events.out.tfevents" not in path}
    assert not new and all(after[path] == digest for path, digest in before.items())


def test_the_traceback_flag_shows_the_traceback(files):
    flags = [f"--input={files / 'empty'}", f"--output={files / 'out.npy'}", "--traceback"]
    result = run("stackgan_jax.text.embed", *flags)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "BadFileError: " in result.stderr


def test_a_bug_keeps_its_traceback(tmp_path):
    # Not an input error: a programming error inside a CLI's main shows where it happened.
    script = tmp_path / "buggy.py"
    script.write_text(
        "from stackgan_jax import cli\ndef main(argv):\n    return {}['key']\ncli.run(main)\n"
    )
    result = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'key'" in result.stderr
    assert "error: " not in result.stderr
