"""Prune an image's assemble stage down to what its final stage ships (Dockerfile.webhook, Dockerfile.sidecars).

    python3 -I -B slim-rootfs.py /opt/venv        (as root, in a stage FROM python:3.11-slim + the venv)

The final stage is ``FROM scratch`` + ``COPY --from=<this stage> / /``: one layer holding only what is
left here, so the deletions really shrink the image. Every path is discovered from the interpreter
(sysconfig) and ``ldd``, so the same script works on the official python:3.11-slim (python in
/usr/local, stdlib without bytecode) and on Debian's python3.11 (python in /usr/bin, stdlib with
__pycache__). What stays:

- the interpreter and its stdlib, minus what only develops, installs or draws (ensurepip, idlelib,
  tkinter, turtledemo, test, lib2to3, distutils, pydoc_data, the base's own pip/setuptools/wheel) and
  the extension modules that nothing here imports (the _test* modules, curses, readline, dbm, nis);
  the stdlib is compiled to sourceless bytecode (the Dockerfiles explain the bytecode policy);
- the virtualenv, as its build script made it;
- /bin/sh (dash) and a few coreutils to look around with ``kubectl exec`` (KEEP_COMMANDS);
- exactly the shared libraries that ``ldd`` finds for the interpreter, the stdlib's and the venv's
  extension modules and those commands, plus what glibc dlopens at run time (libgcc_s for thread
  cancellation/exit, the NSS modules named by /etc/nsswitch.conf);
- /etc (CA bundle and its hashed links, openssl.cnf, nsswitch.conf, services, os-release), the CA
  certificates in /usr/share/ca-certificates, the C.UTF-8 locale, and for each Debian package that
  still has a file here its copyright file and its stanza in /var/lib/dpkg/status (so that image
  scanners still see glibc, OpenSSL... and their versions).

Everything else goes: apt, dpkg (its database but that status file), perl, every other binary
(setuid ones included), docs, man pages, locales, gconv modules, terminfo, zoneinfo (time zones come
from the tzdata wheel where a venv has it; otherwise UTC), caches and logs. The script deletes itself.
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# Commands kept besides the interpreter: the shell (dash is /bin/sh on Debian) and a small debugging kit.
KEEP_COMMANDS = frozenset("""
    sh dash
    cat cp cut date df du echo env false head id ln ls mkdir mv printenv printf pwd readlink rm rmdir
    sleep sort stat tail tee test [ timeout touch tr true uname wc
    grep
""".split())
# Stdlib packages/modules that only develop, install, test or draw (matched against the top-level name).
STDLIB_DROP = ("ensurepip", "idlelib", "tkinter", "turtledemo", "turtle.py", "test", "lib2to3", "distutils",
               "pydoc_data", "__phello__", "__hello__.py", "config-")
# Extension modules (lib-dynload) that nothing in these images imports; several pull whole libraries
# (nis: libnsl/libtirpc/Kerberos; _dbm: Berkeley DB; _curses, readline: ncurses/readline/terminfo).
DYNLOAD_DROP = re.compile(r"^(_test\w*|_xxtestfuzz|_ctypes_test|xxlimited\w*|xxsubtype|_xxsubinterpreters|nis|_curses\w*|"
                          r"readline|_dbm|_gdbm|_tkinter|ossaudiodev)\.")
# Directories whose whole content goes (paths inside the root filesystem).
DROP_DIRS = ("/var/lib/apt", "/var/lib/systemd", "/var/lib/pam", "/var/cache", "/var/log", "/etc/apt", "/usr/libexec",
             "/usr/include", "/usr/local/include", "/usr/src", "/usr/games", "/usr/local/share")
USR_SHARE_KEEP = ("ca-certificates", "common-licenses", "doc")   # doc: pruned to kept packages' copyright files
SKIP_WALK = ("/proc", "/sys", "/dev", "/run", "/tmp")


def log(msg: str) -> None:
    print(f"slim-rootfs: {msg}", flush=True)


def rm(path: str | Path) -> None:
    p = Path(path)
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def du(*paths: str) -> int:
    total = 0
    for top in paths:
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.join(root, d) not in SKIP_WALK]
            for f in files:
                p = os.path.join(root, f)
                total += len(os.readlink(p)) if os.path.islink(p) else os.lstat(p).st_size
    return total


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def ldd(path: str, missing: list[str]) -> set[str]:
    """Every library the dynamic loader maps for path (the whole closure), as real paths."""
    done = subprocess.run(["ldd", path], capture_output=True, text=True)
    if done.returncode != 0:  # static, or not an ELF the loader handles
        return set()
    found = set()
    for line in done.stdout.splitlines():
        parts = line.split()
        if "=>" in parts and "not" in parts and "found" in parts:
            missing.append(f"{path}: {line.strip()}")
        elif len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
            found.add(os.path.realpath(parts[2]))
        elif parts and parts[0].startswith("/"):
            found.add(os.path.realpath(parts[0]))
    return found


def real_dirs(*paths: str) -> list[str]:
    """The given directories that exist and are not symlinks (merged /usr: /lib -> usr/lib)."""
    return [p for p in paths if os.path.isdir(p) and not os.path.islink(p)]


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    venv = os.path.realpath(sys.argv[1])
    python = os.path.realpath(os.path.join(venv, "bin", "python"))
    stdlib = sysconfig.get_path("stdlib")
    dynload = sysconfig.get_config_var("DESTSHARED") or os.path.join(stdlib, "lib-dynload")
    purelib = sysconfig.get_path("purelib")  # the base's own site-packages (pip, setuptools, wheel)
    log(f"interpreter {python}, stdlib {stdlib}, extension modules {dynload}, venv {venv}")
    before = du("/")

    # ---- the stdlib
    for name in os.listdir(stdlib):
        if any(name == d or (d.endswith("-") and name.startswith(d)) for d in STDLIB_DROP):
            rm(os.path.join(stdlib, name))
    if os.path.isdir(purelib) and purelib.startswith(stdlib):
        for name in os.listdir(purelib):
            if name != "README.txt":
                rm(os.path.join(purelib, name))
    for name in os.listdir(dynload):
        if DYNLOAD_DROP.match(name):
            rm(os.path.join(dynload, name))
    # Bytecode policy: sourceless legacy .pyc beside each module (compileall -b), sources and
    # __pycache__ removed. Whatever fails to compile keeps its source.
    if not compileall.compile_dir(stdlib, quiet=1, legacy=True, workers=0):
        log("WARNING: some stdlib modules did not compile; their sources stay")
    for root, dirs, files in os.walk(stdlib):
        if "__pycache__" in dirs:
            shutil.rmtree(os.path.join(root, "__pycache__"))
            dirs.remove("__pycache__")
        for f in files:
            if f.endswith(".py") and f + "c" in files:
                os.unlink(os.path.join(root, f))

    # ---- commands: the interpreter's names, the shell and the kit; nothing else in any bin directory
    keep_names = KEEP_COMMANDS | {os.path.basename(python), "python3", "python"}
    bin_dirs = real_dirs("/usr/local/bin", "/usr/local/sbin", "/usr/bin", "/usr/sbin", "/bin", "/sbin")
    kept_commands = []
    for d in bin_dirs:
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if name in keep_names and os.path.exists(path):
                kept_commands.append(path)
    missing_commands = sorted(c for c in KEEP_COMMANDS if not any(os.path.basename(k) == c for k in kept_commands))
    if missing_commands:
        log(f"note: not in the base image, so not in this one: {' '.join(missing_commands)}")

    # ---- shared libraries: the ldd closure of everything that stays, plus glibc's dlopen()s
    elves = {python, *(os.path.realpath(c) for c in kept_commands if is_elf(c))}
    for top in (dynload, venv):
        for root, _dirs, files in os.walk(top):
            elves.update(os.path.join(root, f) for f in files if ".so" in f and is_elf(os.path.join(root, f)))
    missing: list[str] = []
    keep_libs: set[str] = set()
    for elf in sorted(elves):
        keep_libs |= ldd(elf, missing)
    libc = next((lib for lib in keep_libs if os.path.basename(lib).startswith("libc.so")), None)
    if libc is None:
        log("ERROR: ldd found no libc for the interpreter")
        return 1
    libdir = os.path.dirname(libc)
    dlopened = ["libgcc_s.so.1"]  # pthread_cancel / pthread_exit unwinding
    nss = Path("/etc/nsswitch.conf").read_text() if os.path.exists("/etc/nsswitch.conf") else ""
    for service in sorted(set(re.findall(r"^\s*(?:passwd|group|hosts|services|protocols|networks)\s*:(.*)$", nss, re.M))):
        for word in service.split():
            if re.fullmatch(r"[a-z0-9_]+", word):
                dlopened.append(f"libnss_{word}.so.2")
    for name in dlopened:
        path = os.path.join(libdir, name)
        if os.path.exists(path):
            keep_libs.add(os.path.realpath(path))
            keep_libs |= ldd(path, missing)
    for m in missing:
        log(f"WARNING: {m} (missing in the base image too)")
    lib_dirs = real_dirs("/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib32", "/lib64", "/usr/lib32",
                         "/usr/libx32")
    # In the library directories only kept libraries stay (and os-release, the C.UTF-8 locale, the
    # OpenSSL directory and the interpreter's own tree, handled above): no perl, gconv, PAM modules,
    # init scripts, tmpfiles.d...
    removed_libs = 0
    for top in lib_dirs:
        for root, dirs, files in os.walk(top):
            if root == top:
                dirs[:] = [d for d in dirs if not d.startswith(("python2", "python3")) and d not in ("locale", "ssl")]
                files = [f for f in files if f != "os-release"]
            for f in files:
                path = os.path.join(root, f)
                is_lib = re.search(r"\.so(\.[0-9.]+)?$", f) is not None
                if not (is_lib and os.path.realpath(path) in keep_libs):
                    os.unlink(path)
                    removed_libs += is_lib
    rm("/usr/lib/ssl/misc")  # CA.pl, tsget: perl scripts of the openssl command, which is gone

    # The loader's cache, rebuilt for the libraries that stayed.
    ldconfig = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None)
    if ldconfig:
        subprocess.run([ldconfig], check=True)

    # ---- data, package managers, docs
    for d in DROP_DIRS:
        rm(d)
    if os.path.isdir("/usr/share"):
        for name in os.listdir("/usr/share"):
            if name not in USR_SHARE_KEEP:
                rm(os.path.join("/usr/share", name))
    # Commands go last (this script needs none of them any more).
    kept = set(kept_commands)
    for d in bin_dirs:
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if path not in kept:
                rm(path)

    # ---- what dpkg knew: keep the status stanzas and copyright files of packages that still have files
    info = Path("/var/lib/dpkg/info")
    kept_packages: set[str] = set()
    if info.is_dir():
        for listing in info.glob("*.list"):
            package = listing.name[:-len(".list")].split(":")[0]
            for line in listing.read_text(errors="replace").splitlines():
                # Files left in /etc do not count: like `dpkg --remove`, which leaves conffiles.
                if line.startswith(("/usr/share/doc/", "/etc/")) or not line.startswith("/"):
                    continue
                if os.path.isfile(line) and not os.path.isdir(line):
                    kept_packages.add(package)
                    break
        status = Path("/var/lib/dpkg/status")
        stanzas = status.read_text().split("\n\n") if status.exists() else []
        kept_stanzas = [s for s in stanzas if (m := re.search(r"^Package: (\S+)", s, re.M)) and m.group(1) in kept_packages]
        rm("/var/lib/dpkg")
        os.makedirs("/var/lib/dpkg")
        Path("/var/lib/dpkg/status").write_text("\n\n".join(s.strip("\n") for s in kept_stanzas) + "\n")
        log(f"dpkg: {len(kept_packages)} of {len(stanzas)} packages still have files: "
            f"{' '.join(sorted(kept_packages))}")
    if os.path.isdir("/usr/share/doc"):
        for name in os.listdir("/usr/share/doc"):  # libgcc-s1 -> gcc-12-base: the target holds the copyright
            path = os.path.join("/usr/share/doc", name)
            if name.split(":")[0] in kept_packages and os.path.islink(path):
                kept_packages.add(os.path.basename(os.readlink(path).rstrip("/")))
        for name in os.listdir("/usr/share/doc"):
            path = os.path.join("/usr/share/doc", name)
            if name.split(":")[0] not in kept_packages or not os.path.isdir(path):
                rm(path)
                continue
            if os.path.islink(path):  # e.g. libpython3.11-stdlib -> libpython3.11-minimal
                continue
            for entry in os.listdir(path):
                if entry != "copyright":
                    rm(os.path.join(path, entry))

    # ---- dangling symlinks (alternatives, /etc/localtime without zoneinfo...) and empty directories
    for top in real_dirs("/etc", "/usr", "/var"):
        for root, dirs, files in os.walk(top):
            for name in files + dirs:
                path = os.path.join(root, name)
                if os.path.islink(path) and not os.path.exists(path):
                    os.unlink(path)
    for top in real_dirs("/usr/lib", "/usr/share", "/usr/local/lib", "/var/lib"):
        for root, dirs, files in os.walk(top, topdown=False):
            for d in dirs:
                path = os.path.join(root, d)
                if not os.path.islink(path) and not os.listdir(path):
                    os.rmdir(path)
    os.unlink(os.path.abspath(__file__))
    after = du("/")
    log(f"kept {len(kept)} commands ({' '.join(sorted(os.path.basename(k) for k in kept))}), "
        f"{len(keep_libs)} shared libraries (removed {removed_libs}); root filesystem {before / 1e6:.1f} MB -> "
        f"{after / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
