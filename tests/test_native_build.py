"""How the compiled loops are built, verified and loaded (`dqn2snn_plugin._native.loader`): a cached
library is loaded only after its owner, mode and digest are checked, a planted or broken one is
rebuilt once, concurrent builds compile once, a missing compiler falls back with one warning, and
every call is checked against the header's prototypes (a wrong argument raises, never segfaults)."""

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch

from dqn2snn_plugin._native import fused_scan, loader
from dqn2snn_plugin.errors import ConfigError, NativeCodeError

needs_compiler = pytest.mark.skipif(loader.compiler() is None, reason="no C compiler on this machine")
REPO = Path(__file__).resolve().parents[1]
PLANTED_C = """#include <stdio.h>
#include <stdlib.h>
/* a stranger's library: if it is ever loaded, its constructor leaves a mark */
__attribute__((constructor)) static void planted(void) {
    const char *mark = getenv("PLANTED_MARK");
    FILE *f = mark ? fopen(mark, "w") : NULL;
    if (f) fclose(f);
}
int if_scan_f32(void) { return 0; }
"""


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Path:
    """One library built for this module's tests, into a cache directory that did not exist (each test
    copies it: one compile, not one per test)."""
    return loader.build(tmp_path_factory.mktemp("genuine") / "cache" / "native")


@pytest.fixture
def cache(tmp_path, genuine) -> Path:
    """A private native cache holding a copy of the genuine library and its record."""
    directory = tmp_path / "native"
    directory.mkdir(mode=0o700)
    for path in (genuine, loader.record_file(genuine)):
        shutil.copy2(path, directory / path.name)
    return directory


@pytest.fixture
def rebuilds(genuine, monkeypatch) -> list[Path]:
    """The rebuilds `open_library` makes, each a copy of the genuine build and its record (a compile
    takes seconds; the real one is exercised by `genuine` and the tests that build afresh)."""
    calls = []

    def copy_genuine(target: Path, cc: str) -> None:
        calls.append(target)
        shutil.copy2(genuine, target)
        shutil.copy2(loader.record_file(genuine), loader.record_file(target))

    monkeypatch.setattr(loader, "compile_into", copy_genuine)
    return calls


@pytest.fixture
def planted_elf(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A shared library that marks a file when loaded (and defines none of the real functions), and the mark."""
    source, elf, mark = tmp_path / "planted.c", tmp_path / "planted.so", tmp_path / "planted-was-loaded"
    source.write_text(PLANTED_C)
    subprocess.run([loader.compiler(), "-shared", "-fPIC", str(source), "-o", str(elf)], check=True)
    monkeypatch.setenv("PLANTED_MARK", str(mark))
    return elf, mark


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def works(lib) -> bool:
    """Whether the loaded library's IF scan runs: 0.5 a step against threshold 1 spikes every other step."""
    ffi = loader.interface()
    current, v, spikes = torch.tensor([0.5]), torch.zeros(1), torch.empty(4)
    lib.if_scan_f32(ffi.cast("float *", current.data_ptr()), 0, ffi.cast("float *", v.data_ptr()),
                    ffi.cast("float *", spikes.data_ptr()), 4, 1, 1.0, 1)
    return spikes.tolist() == [0, 1, 0, 1]


@needs_compiler
def test_the_library_is_built_once_into_a_private_directory(genuine):
    directory = genuine.parent
    assert (directory.stat().st_mode & 0o777) == 0o700, "created for the user alone"
    assert genuine.stat().st_mode & 0o077 == 0 and loader.read_record(genuine)["sha256"] == digest(genuine)
    stamp = genuine.stat().st_mtime_ns
    assert loader.build(directory) == genuine and genuine.stat().st_mtime_ns == stamp
    # no temporary files left behind: the library, its record and the lock
    assert sorted(p.name for p in directory.iterdir()) == sorted([genuine.name, f"{genuine.stem}.json", "fused_scan.lock"])


def plant(cache: Path, elf: Path, how: str) -> Path:
    """Replace the cached library by `elf` so that only one check (`how`) stands in its way."""
    target = next(cache.glob("*.so"))
    shutil.copyfile(elf, target)
    record = loader.record_file(target)
    if how != "digest-mismatch":  # otherwise the record of the genuine build stays
        record.write_text(record.read_text().replace(loader.read_record(target)["sha256"], digest(target)))
    if how == "no-record":
        record.unlink()
    target.chmod({"group-writable": 0o770, "world-writable": 0o706}.get(how, 0o700))
    return target


@needs_compiler
@pytest.mark.parametrize("how", ["group-writable", "world-writable", "digest-mismatch", "no-record"])
def test_a_planted_library_is_never_loaded_and_is_rebuilt_once(cache, genuine, planted_elf, how, rebuilds):
    elf, mark = planted_elf
    target = plant(cache, elf, how)
    with pytest.warns(RuntimeWarning, match="refused the cached native library") as caught:
        path, lib = loader.open_library(cache)
    assert len(caught) == 1 and path == target
    assert not mark.exists(), "the planted library ran"
    assert rebuilds == [target] and digest(path) == digest(genuine) and works(lib)
    assert path.stat().st_mode & 0o077 == 0


@needs_compiler
def test_a_symlink_in_place_of_the_library_is_not_followed(cache, genuine, planted_elf, rebuilds):
    elf, mark = planted_elf
    target = next(cache.glob("*.so"))
    target.unlink()
    target.symlink_to(elf)
    with pytest.warns(RuntimeWarning, match="not a regular file"):
        path, lib = loader.open_library(cache)
    assert not mark.exists() and not path.is_symlink() and len(rebuilds) == 1 and works(lib)


@needs_compiler
def test_a_truncated_library_is_rebuilt(cache, genuine, rebuilds):
    target = next(cache.glob("*.so"))
    target.write_bytes(genuine.read_bytes()[: genuine.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="differs from the digest"):
        path, lib = loader.open_library(cache)
    assert rebuilds == [target] and digest(path) == digest(genuine) and works(lib)


@needs_compiler
def test_an_elf_without_the_functions_is_rebuilt(cache, genuine, planted_elf, rebuilds):
    """A library whose record matches (the user's own mistake, not a stranger's) but that lacks the functions."""
    elf, mark = planted_elf
    plant(cache, elf, "verified")
    with pytest.warns(RuntimeWarning, match="lacks"):
        path, lib = loader.open_library(cache)
    assert mark.exists(), "a library whose owner, mode and digest check out is loaded"
    assert len(rebuilds) == 1 and digest(path) == digest(genuine) and works(lib)


@needs_compiler
def test_a_library_that_fails_again_after_its_rebuild_is_given_up(cache, planted_elf, monkeypatch):
    elf, _ = planted_elf
    compiled = []

    def compile_planted(target: Path, cc: str) -> None:  # a build that yields an ELF without the functions
        compiled.append(target)
        shutil.copyfile(elf, target)
        loader.record_file(target).write_text(f'{{"sha256": "{digest(target)}"}}')

    monkeypatch.setattr(loader, "compile_into", compile_planted)
    next(cache.glob("*.so")).unlink()
    with pytest.warns(RuntimeWarning, match="lacks"), pytest.raises(loader.UnverifiedLibraryError, match="lacks"):
        loader.open_library(cache)
    assert len(compiled) == 2, "built once, rebuilt once, then given up"


@needs_compiler
@pytest.mark.parametrize("where", ["itself", "above"])
def test_a_cache_others_can_write_is_refused(tmp_path, monkeypatch, where):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: others could rename what it holds
    directory = shared / "native"
    if where == "itself":
        directory.mkdir()
        directory.chmod(0o777)
    with pytest.raises(OSError, match="writable by others"):
        loader.build(directory)
    assert not list(directory.glob("*.so"))
    monkeypatch.setenv("DQN2SNN_CACHE", str(shared))
    loader.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="writable by others") as caught:
            assert fused_scan.library() is None
        assert len(caught) == 1
        monkeypatch.setenv("DQN2SNN_NATIVE", "require")
        loader.library.cache_clear()
        with pytest.raises(NativeCodeError, match="writable by others"):
            fused_scan.library()
    finally:
        loader.library.cache_clear()


def test_a_sticky_shared_folder_like_tmp_is_accepted(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert loader.private(shared / "native") == (shared / "native").resolve()


@pytest.mark.slow
@needs_compiler
def test_two_processes_building_at_once_both_succeed_and_compile_once(tmp_path):
    """The build holds a file lock: the second process waits and loads the first one's library."""
    log, wrapper = tmp_path / "compiles.log", tmp_path / "cc"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> "{log}"\nexec "{loader.compiler()}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "CC": str(wrapper), "DQN2SNN_CACHE": str(tmp_path / "cache"), "DQN2SNN_NATIVE": "require",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    script = ("import torch\nfrom dqn2snn_plugin._native import fused_scan\n"
              "spikes, v = fused_scan.if_scan(torch.full((4, 1), 0.5), torch.zeros(1), 1.0)\n"
              "assert spikes.flatten().tolist() == [0, 1, 0, 1]\nprint('ok')\n")
    processes = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in results]
    assert all(out.strip() == "ok" and "Warning" not in err for out, err in results)
    assert len(log.read_text().split()) == 1, "compiled once"
    assert len(list((tmp_path / "cache" / "native").glob("*.so"))) == 1


def test_without_a_compiler_it_warns_once_and_falls_back(tmp_path, monkeypatch):
    from dqn2snn_plugin.engine.rate import if_scan

    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path))
    monkeypatch.setattr(loader, "compiler", lambda: None)
    loader.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no C compiler") as caught:
            assert fused_scan.library() is None
        assert len(caught) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second call must not warn again
            spikes, v = if_scan(torch.full((4, 1), 0.5), torch.zeros(1))
        assert spikes.flatten().tolist() == [0, 1, 0, 1] and float(v) == 0.0
        monkeypatch.setenv("DQN2SNN_FUSED_SCAN", "0")
        loader.library.cache_clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # switched off on purpose: silent
            assert fused_scan.library() is None
    finally:
        loader.library.cache_clear()


def test_the_strict_mode_fails_instead_of_falling_back(tmp_path, monkeypatch):
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path))
    monkeypatch.setattr(loader, "compiler", lambda: None)
    loader.library.cache_clear()
    try:
        monkeypatch.setenv("DQN2SNN_NATIVE", "require")
        with pytest.raises(NativeCodeError, match="no C compiler"):
            fused_scan.library()
        monkeypatch.setenv("DQN2SNN_NATIVE", "sometimes")
        with pytest.raises(ConfigError, match="DQN2SNN_NATIVE='sometimes'"):
            fused_scan.library()
    finally:
        loader.library.cache_clear()


def test_a_missing_c_source_warns_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path))
    monkeypatch.setattr(loader, "SOURCE_FILE", tmp_path / "gone.c")
    loader.source.cache_clear()
    loader.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="gone.c"):
            assert fused_scan.library() is None
    finally:
        loader.source.cache_clear()
        loader.library.cache_clear()


@pytest.mark.slow
@needs_compiler
def test_a_compiler_refusing_the_fast_flags_builds_the_plain_library(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "FAST", ["-fno-such-option-anywhere"])
    path = loader.build(tmp_path)
    assert loader.read_record(path)["flags"] == loader.FLAGS and not loader.read_record(path)["openmp"]
    assert works(loader.load(path))


@needs_compiler
def test_the_cached_library_is_specific_to_the_cpu(cache, monkeypatch):
    """-march=native code may not run on another CPU (a home directory shared across a cluster)."""
    here = next(cache.glob("*.so"))
    monkeypatch.setattr(loader, "cpu_identity", lambda: "some other CPU")
    assert loader.library_name(loader.compiler()) != here.name


@needs_compiler
def test_a_call_that_does_not_match_the_prototype_raises(cache):
    """cffi checks every call against fused_scan.h: a wrong count or type of arguments is a TypeError."""
    lib = loader.load(next(cache.glob("*.so")))
    ffi = loader.interface()
    current, v, spikes = (ffi.cast("float *", t.data_ptr()) for t in (torch.zeros(1),) * 3)
    doubles = ffi.cast("double *", torch.zeros(1, dtype=torch.float64).data_ptr())
    with pytest.raises(TypeError, match="8 arguments"):
        lib.if_scan_f32(current, 0, v, spikes, 4, 1, 1.0)  # one missing
    with pytest.raises(TypeError):
        lib.if_scan_f32(current, 0, doubles, spikes, 4, 1, 1.0, 1)  # float64 data to a float32 loop
    with pytest.raises(TypeError):
        lib.if_scan_f32(torch.zeros(1).data_ptr(), 0, v, spikes, 4, 1, 1.0, 1)  # an address, not a pointer
    synapses = ffi.new("struct synapses_f64 *")
    with pytest.raises(TypeError):
        lib.events_f32(current, 1, doubles, 1, synapses, spikes, 0, 1)  # a float64 layer to a float32 pass


@needs_compiler
def test_the_compiler_checks_the_c_definitions_against_the_header(tmp_path):
    """The header cffi reads is the one fused_scan.c includes: a prototype that disagrees with its
    definition does not compile, nor does a public function without a prototype."""
    def compiles(header: str) -> subprocess.CompletedProcess:
        shutil.copy(loader.SOURCE_FILE, tmp_path / "fused_scan.c")
        (tmp_path / "fused_scan.h").write_text(header)
        return subprocess.run([loader.compiler(), "-fsyntax-only", "-Werror=missing-prototypes",
                               str(tmp_path / "fused_scan.c")], capture_output=True, text=True)

    header = loader.header()
    assert compiles(header).returncode == 0
    wrong = header.replace("double threshold, int64_t threads);", "float threshold, int64_t threads);")
    assert wrong != header and compiles(wrong).returncode != 0
    without = header.replace("int NAME(fractional)(const real *x, int64_t n, int64_t threads);", "")
    assert without != header and compiles(without).returncode != 0
    assert len(loader.functions()) == 20 and "rate_layer_f64" in loader.functions()


@needs_compiler
def test_switched_off_holds_in_its_own_thread_only():
    """A context variable, not a global: another thread keeps the compiled loops."""
    x = torch.zeros(1)
    seen = []
    with fused_scan.switched_off():
        assert fused_scan._usable(x) is None
        thread = threading.Thread(target=lambda: seen.append(fused_scan._usable(x) is not None))
        thread.start()
        thread.join()
    assert seen == [True] and fused_scan._usable(x) is not None


@needs_compiler
def test_the_module_prebuilds_and_reports_how(cache, monkeypatch, capsys):
    """`python -m dqn2snn_plugin._native` (its `main`, here in this process)."""
    from dqn2snn_plugin._native.__main__ import main

    monkeypatch.setenv("DQN2SNN_CACHE", str(cache.parent))
    assert main() == 0
    record, out = loader.read_record(next(cache.glob("*.so"))), capsys.readouterr().out
    assert record["sha256"] in out and record["compiler"] in out
    assert f"openmp    {'yes' if record['openmp'] else 'no'}" in out
    cache.chmod(0o777)
    assert main() == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
