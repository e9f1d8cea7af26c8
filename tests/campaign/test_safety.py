"""Campaign safety (issue #12): every failure a week-long campaign can meet is one line on stderr
with a documented exit code, never a traceback, and never damages what is on disk.

Locked run directory, damaged stores, elements the reference cannot treat, duplicated YAML keys,
resume with harmless changes, relative run_dir, full / read-only disks, a reference that fails
every initial calculation, an MPI rank that vanishes, atomic outputs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ase.build import bulk

from csp.atomic import atomic_write, storage_error_message
from csp.campaign.identity import changed_keys
from csp.campaign.lock import LOCK_NAME, lock_holder
from csp.campaign.store import STORE_NAME, CampaignStore
from csp.config import load_search
from csp.errors import InputError

ENV = dict(os.environ, OMP_NUM_THREADS="1")
SEARCH = """\
elements: [Cu, Pd]
seed: 1
candidates: {enumerate: {lattices: [fcc], max_atoms: 2}, prototypes: false}
screening: {stages: [{level: 6}], training: {max_iter: 50}}
"""
FARM_SCRIPT = Path(__file__).with_name("farm_script.py")


def csp(*args: str, cwd: Path | None = None, env: dict | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "csp", *args], capture_output=True, text=True, cwd=cwd,
                          env=env or ENV, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("csp: error: "), proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def write_search(directory: Path, text: str = SEARCH, name: str = "search.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


# -- 1. one `csp run` per run directory ------------------------------------------------------
def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_second_csp_run_on_a_directory_in_use_exits_2_naming_the_holder(tmp_path):
    # a slower search than SEARCH, so that the first run is still busy when the second starts
    slower = SEARCH.replace("max_atoms: 2", "max_atoms: 4").replace("max_iter: 50", "max_iter: 400")
    search = write_search(tmp_path, slower)
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "csp", "run", str(search), "--run-dir", str(run_dir), "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        _wait_for(lambda: (run_dir / LOCK_NAME).exists(), first)
        rows_before = _store_rows(run_dir)
        second = csp("run", str(search), "--run-dir", str(run_dir))
        assert first.poll() is None, "the first run ended before the second was refused: make it slower"
        line = assert_one_line_error(second, "in use by another csp run", f"pid {first.pid}", "since ")
        holder = lock_holder(run_dir)
        assert holder.pid == first.pid and holder.alive is True and f"host {holder.host}" in line
        assert _store_rows(run_dir) >= rows_before       # the second run wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()


def test_mpirun_csp_run_on_a_locked_directory_exits_2_and_releases_the_workers(tmp_path):
    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                                     "started": time.time()}))
        proc = subprocess.run(["mpirun", "-n", "2", sys.executable, "-m", "csp", "run", str(write_search(tmp_path)),
                               "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=120, env=ENV)
        assert_one_line_error(proc, f"pid {holder.pid}", "in use by another csp run")
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


def _store_rows(run_dir: Path) -> int:
    if not (run_dir / STORE_NAME).exists():
        return 0
    with CampaignStore(run_dir) as store:
        return sum(store.counts().values())


def test_lock_of_a_sigkilled_run_is_taken_over_and_a_vanished_rank_is_reported(tmp_path):
    search = write_search(tmp_path)
    run_dir = tmp_path / "run"
    killed = csp("run", str(search), "--run-dir", str(run_dir), "--quiet",
                 env=dict(ENV, CSP_FAULT_KILL="candidates stored"))
    assert killed.returncode == -signal.SIGKILL
    holder = lock_holder(run_dir)
    assert holder is not None and holder.alive is False          # stale: csp status can say so
    # as if the killed job had had a worker rank busy with a task
    (run_dir / "csp.rank1.log").write_text("2026-01-01T00:00:00 serving pid 12 host node7\n"
                                           "2026-01-01T00:00:01 start run_reference_task[4]\n")
    resumed = csp("run", str(search), "--run-dir", str(run_dir),
                  env=dict(ENV, CSP_FAULT_KILL="initial training set"))
    assert resumed.returncode == -signal.SIGKILL, resumed.stderr[-3000:]
    assert f"took over the stale lock of run directory '{run_dir}' (host {holder.host}, pid {holder.pid}" \
        in resumed.stderr
    assert "MPI rank 1 (pid 12 host node7) ended while running task run_reference_task[4]" in resumed.stderr
    log = (run_dir / "csp.log").read_text()
    assert "took over the stale lock" in log and "MPI rank 1" in log
    from csp.campaign.farm import ended_ranks

    assert ended_ranks(run_dir) == []    # reported once, not at every later start
    assert "Traceback" not in resumed.stderr


# -- 2. damaged stores -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("good") / "run"
    with CampaignStore(run_dir, create=True) as store:
        store.add_candidates([bulk("Cu", cubic=True) * (2, 2, 2) for _ in range(300)])
        store.set_meta("elements", ["Cu", "Pd"])
    return run_dir


def _damage(good: Path, where: Path, how: str) -> bytes:
    shutil.copytree(good, where)
    path = where / STORE_NAME
    with open(path, "r+b") as f:
        f.truncate(0 if how == "empty" else path.stat().st_size // 2)
    return path.read_bytes()


@pytest.mark.parametrize("how", ["truncated", "empty"])
@pytest.mark.parametrize("command", ["status", "report", "run"])
def test_damaged_store_is_one_line_exit_2_and_left_untouched(good_store, tmp_path, how, command):
    run_dir = tmp_path / "run"
    before = _damage(good_store, run_dir, how)
    if command == "run":
        proc = csp("run", str(write_search(tmp_path)), "--run-dir", str(run_dir))
    else:
        proc = csp(command, str(run_dir))
    assert_one_line_error(proc, str(run_dir / STORE_NAME), "damaged campaign store", "move it aside")
    assert (run_dir / STORE_NAME).read_bytes() == before
    assert not (run_dir / LOCK_NAME).exists()                   # `csp run` released its lock
    assert not (run_dir / "report").exists()


def test_store_creation_is_atomic(tmp_path):
    """A new store appears complete (schema and version) or not at all: a zero-byte store, which
    a run killed while creating it used to leave, cannot arise (and is refused as damaged)."""
    with CampaignStore(tmp_path / "run", create=True) as store:
        assert store.get_meta("schema_version") is not None
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [STORE_NAME]


# -- 3. elements the reference cannot treat ----------------------------------------------------
def test_unsupported_element_with_emt_exits_2_at_load_and_writes_nothing(tmp_path):
    search = write_search(tmp_path / "in", SEARCH.replace("[Cu, Pd]", "[Cu, Fe]") + "run_dir: out\n")
    proc = csp("run", str(search), cwd=tmp_path)
    assert_one_line_error(proc, str(search), "'elements'", "element Fe is not supported by the emt reference")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["search.yaml"]


def test_gpaw_setups_are_checked_at_load(tmp_path, monkeypatch):
    from csp.reference import gpaw

    setups = tmp_path / "setups"
    setups.mkdir()
    (setups / "Cu.PBE.gz").write_bytes(b"")
    (setups / "Pd.LDA").write_bytes(b"")
    monkeypatch.setattr(gpaw, "setup_dirs", lambda: [setups])
    search = write_search(tmp_path, SEARCH + "reference: {calculator: gpaw}\n")
    with pytest.raises(InputError, match=r"search.yaml: key 'elements': no GPAW PBE PAW setup for Pd in the setup "
                                         r"path \(.*setups\)"):
        load_search(search)
    (setups / "Cu.LDA").write_bytes(b"")
    load_search(write_search(tmp_path, SEARCH + "reference: {calculator: gpaw, xc: LDA}\n", "lda.yaml"))
    load_search(write_search(tmp_path, SEARCH + "reference: {calculator: gpaw, parameters: {setups: sg15}}\n",
                             "custom.yaml"))   # custom setups: not checked
    monkeypatch.undo()
    load_search(search)   # the installed GPAW has PBE setups for Cu and Pd


def test_vasp_potcars_are_checked_at_load_when_vasp_pp_path_is_known(tmp_path, monkeypatch):
    (tmp_path / "pp" / "potpaw_PBE" / "Cu").mkdir(parents=True)
    (tmp_path / "pp" / "potpaw_PBE" / "Cu" / "POTCAR").write_text("fake")
    search = write_search(tmp_path, SEARCH + "reference: {calculator: vasp}\n")
    monkeypatch.delenv("VASP_PP_PATH", raising=False)
    load_search(search)                                   # unknown POTCAR location: no check
    monkeypatch.setenv("VASP_PP_PATH", str(tmp_path / "pp"))
    with pytest.raises(InputError, match="search.yaml: key 'elements': no VASP POTCAR for Pd under VASP_PP_PATH"):
        load_search(search)
    copper = SEARCH.replace("[Cu, Pd]", "[Cu]") + "reference: {calculator: vasp}\n"
    load_search(write_search(tmp_path, copper, "cu.yaml"))


def test_espresso_pseudopotential_files_are_checked_at_load(tmp_path):
    (tmp_path / "pseudo").mkdir()
    (tmp_path / "pseudo" / "Cu.UPF").write_text("fake")
    ref = (f"reference: {{calculator: espresso, pseudo_dir: {tmp_path / 'pseudo'}, "
           "pseudopotentials: {Cu: Cu.UPF, Pd: Pd.UPF}}\n")
    with pytest.raises(InputError, match=r"search.yaml: key 'reference.pseudopotentials': file not found .*Pd: Pd.UPF"):
        load_search(write_search(tmp_path, SEARCH + ref))
    (tmp_path / "pseudo" / "Pd.UPF").write_text("fake")
    load_search(write_search(tmp_path, SEARCH + ref))


# -- 4. search file: duplicated keys, resume identity, relative run_dir ------------------------
def test_duplicated_yaml_keys_exit_2_naming_file_key_and_lines(tmp_path):
    search = write_search(tmp_path, SEARCH + "screening: {stages: [{level: 8}]}\n")
    proc = csp("run", str(search), cwd=tmp_path)
    assert_one_line_error(proc, f"{search}: line 5 duplicate key 'screening' (first given on line 4)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search.yaml"]
    nested = write_search(tmp_path, "elements: [Cu, Pd]\nreference:\n  calculator: emt\n  calculator: gpaw\n", "n.yaml")
    with pytest.raises(InputError, match=r"n.yaml: line 4 duplicate key 'calculator' \(first given on line 3\)"):
        load_search(nested)
    flow = write_search(tmp_path, "elements: [Cu, Pd]\nscreening: {training: {max_iter: 5, max_iter: 50}}\n", "f.yaml")
    with pytest.raises(InputError, match="duplicate key 'max_iter'"):
        load_search(flow)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    text = ("elements: [Cu, Pd]\nreference:\n  calculator: emt\n  relax: &r {fmax: 0.05, max_steps: 100}\n"
            "screening:\n  relax: {<<: *r, fmax: 0.02}\n")
    s = load_search(write_search(tmp_path, text))
    assert s.screening.relax.fmax == 0.02 and s.screening.relax.max_steps == 100


def test_changed_keys_ignores_settings_that_cannot_change_results():
    old = {"elements": ["Cu", "Pd"], "seed": 1, "reference": {"calculator": "gpaw", "ecut": 500, "timeout": 3600},
           "screening": {"stages": [{"level": 6}]}}
    new = {"elements": ["Cu", "Pd"], "seed": 1,
           "reference": {"calculator": "gpaw", "ecut": 500, "timeout": 7200, "isolation": "inline",
                         "fallbacks": [{"maxiter": 2000}], "command": "mpirun -n 8 pw.x"},
           "screening": {"stages": [{"level": 6}]}, "run_dir": "elsewhere", "name": "renamed"}
    assert changed_keys(old, new) == []
    new["seed"], new["reference"]["ecut"], new["screening"]["stages"] = 2, 600, [{"level": 8}]
    assert changed_keys(old, new) == ["seed", "reference.ecut", "screening.stages"]
    assert changed_keys({"reference": "emt"}, {"reference": {"calculator": "emt", "timeout": 5}}) == []
    assert changed_keys({}, {"reference": {"timeout": 5}}) == []
    assert changed_keys({}, {"seed": 0}) == ["seed"]


def _open_campaign(search_path: Path, run_dir: Path):
    from csp.campaign.farm import Farm, SerialComm
    from csp.campaign.pipeline import Campaign

    campaign = Campaign(load_search(search_path, run_dir=run_dir), Farm(SerialComm()), progress=False, quiet=True)
    campaign.store.close()


def test_resume_allows_harmless_changes_and_names_the_changed_keys(tmp_path):
    run_dir = tmp_path / "run"
    _open_campaign(write_search(tmp_path, SEARCH + "reference: {calculator: emt, timeout: 60}\n"), run_dir)
    _open_campaign(write_search(tmp_path, SEARCH + "reference: {calculator: emt, timeout: 600, isolation: process,"
                                          " fallbacks: []}\n", "harmless.yaml"), run_dir)
    changed = SEARCH.replace("seed: 1", "seed: 2").replace("level: 6", "level: 8")
    with pytest.raises(InputError, match=r"different search \(changed: seed, screening.stages\)"):
        _open_campaign(write_search(tmp_path, changed + "reference: {calculator: emt, timeout: 60}\n", "other.yaml"),
                       run_dir)


def test_relative_run_dir_is_resolved_against_the_search_file(tmp_path, monkeypatch):
    search = write_search(tmp_path / "searches", SEARCH + "run_dir: ../runs/cu-pd\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_search(search).run_dir.resolve() == (tmp_path / "runs" / "cu-pd").resolve()
    assert load_search(Path(os.path.relpath(search))).run_dir.resolve() == (tmp_path / "runs" / "cu-pd").resolve()
    absolute = write_search(tmp_path / "searches", SEARCH + f"run_dir: {tmp_path / 'abs'}\n", "abs.yaml")
    assert load_search(absolute).run_dir == tmp_path / "abs"
    assert load_search(search, run_dir="cli-dir").run_dir == Path("cli-dir")   # --run-dir: the working directory's
    assert load_search(write_search(tmp_path, SEARCH, "plain.yaml")).run_dir == Path("runs") / "plain"


# -- 4. full or read-only disks ---------------------------------------------------------------
def _main(*argv: str) -> int:
    from csp.cli import main

    return main(list(argv))


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("csp: error: "), err
    return lines[0]


def test_full_disk_while_creating_the_store_is_one_line(tmp_path, monkeypatch, capsys):
    from csp.campaign import store

    def full(path):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_create_store", full)
    run_dir = tmp_path / "run"
    assert _main("run", str(write_search(tmp_path)), "--run-dir", str(run_dir), "--quiet") == 2
    line = _one_line(capsys)
    assert f"'{run_dir / STORE_NAME}'" in line and "database or disk is full" in line
    assert not (run_dir / LOCK_NAME).exists()


def test_oserror_without_a_file_name_names_the_run_directory(tmp_path, monkeypatch, capsys):
    from csp.campaign import pipeline

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "setup_logging", no_space)
    run_dir = tmp_path / "run"
    assert _main("run", str(write_search(tmp_path)), "--run-dir", str(run_dir), "--quiet") == 2
    assert _one_line(capsys) == f"csp: error: cannot write '{run_dir}': No space left on device"


def test_disk_io_error_in_status_is_one_line(good_store, monkeypatch, capsys):
    from csp.campaign import store

    def io_error(path):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_open_checked", io_error)
    assert _main("status", str(good_store)) == 2
    line = _one_line(capsys)
    assert str(good_store / STORE_NAME) in line and "disk I/O error" in line


def test_read_only_file_system_is_one_line(tmp_path):
    target = Path("/sys/csp-safety-test")
    try:
        target.mkdir()
    except OSError:
        pass
    else:
        target.rmdir()
        pytest.skip("/sys is writable here")
    proc = csp("run", str(write_search(tmp_path)), "--run-dir", str(target))
    assert_one_line_error(proc, str(target))


def test_storage_error_message_recognises_only_storage_errors():
    assert storage_error_message(OSError(errno.EROFS, "Read-only file system", "/x")) == \
        "cannot write '/x': Read-only file system"
    assert "disk I/O error" in storage_error_message(sqlite3.OperationalError("disk I/O error"), "/r.sqlite")
    assert storage_error_message(sqlite3.OperationalError("no such table: x")) is None
    assert storage_error_message(OSError(errno.EPIPE, "Broken pipe")) is None
    assert storage_error_message(ValueError("x")) is None


# -- 4. a reference that fails every initial calculation ----------------------------------------
def test_every_initial_single_point_failing_is_one_line_exit_2(tmp_path):
    search = write_search(tmp_path, SEARCH + "reference: {calculator: emt, timeout: 1.0e-6}\n")
    run_dir = tmp_path / "run"
    proc = csp("run", str(search), "--run-dir", str(run_dir), "--quiet")
    assert_one_line_error(proc, "every reference single point of the initial training set failed", "timeout",
                          "start again in a new run directory")
    assert not (run_dir / LOCK_NAME).exists()


# -- 4. an MPI rank that vanishes ---------------------------------------------------------------
def test_mpirun_rank_that_exits_hard_is_named_by_its_task_log(tmp_path):
    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun")
    from csp.campaign.farm import ended_ranks

    cmd = ["mpirun", "-n", "2", sys.executable, str(FARM_SCRIPT)]
    proc = subprocess.run([*cmd, "exit_worker", str(tmp_path)], capture_output=True, text=True, timeout=60, env=ENV)
    assert proc.returncode != 0
    log = (tmp_path / "csp.rank1.log").read_text().splitlines()
    assert log[0].split(" ", 1)[1].startswith("serving pid ") and log[-1].endswith("start exit_on_worker[3]")
    (message,) = ended_ranks(tmp_path)
    assert "MPI rank 1 (pid" in message and "ended while running task exit_on_worker[3]" in message
    ok = subprocess.run([*cmd, "ok", str(tmp_path)], capture_output=True, text=True, timeout=60, env=ENV)
    assert ok.returncode == 0, ok.stderr
    assert ended_ranks(tmp_path) == []                     # a clean run ends its log with 'stop'


# -- 4. atomic outputs --------------------------------------------------------------------------
def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "hull.json"
    with atomic_write(path) as f:
        json.dump({"a": 1}, f)
    assert json.loads(path.read_text()) == {"a": 1}
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())   # as open() would make it
    path.chmod(0o640)
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write('{"a": ')
            raise RuntimeError("interrupted half-way")
    assert json.loads(path.read_text()) == {"a": 1}
    with atomic_write(path, "wb") as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hull.json"]
    with pytest.raises(ValueError):
        with atomic_write(path, "a"):
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
