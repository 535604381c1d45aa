"""Apply, check and revert the patches that let upstream UVQ ask the backend registry.

The series (``patches/``, installed as ``uvq_int8.patches``; one concern per patch) is a
set of unified diffs in git's format against madhuhegde/uvq at
``UPSTREAM_COMMIT``, applied in file-name order, each to the tree the previous
ones leave. Each patch's header records the sha256 of every file it touches,
before and after. Hunks must match exactly (no fuzz; a hunk may sit at another
line), so a tree that is neither before nor after a patch is refused, naming
the file and the hunk. Every file is worked out in memory before any is
written, and the writes are all-or-nothing.

No ``patch`` or ``git`` executable is needed.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from uvq_int8 import util
from uvq_int8.errors import UserError
from uvq_int8.util import atomic_write_bytes

UPSTREAM_REPO = "madhuhegde/uvq"
UPSTREAM_COMMIT = "cd051d54b1e48133719c5090024fce1f4b85ed0d"
ABSENT = "absent"  # the sha256 field of a file that does not exist

_HUNK_RE = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_NO_EOL = b"\\ No newline at end of file"


class PatchError(UserError):
    """The tree does not match the patches, or a patch file is malformed."""

    matched = 0  # hunks that did match before the failure, in the attempt that raised it


@dataclass(frozen=True)
class Hunk:
    header: str
    old_start: int
    new_start: int
    old: tuple[bytes, ...]  # lines with their line ends, as in the file
    new: tuple[bytes, ...]
    added: int = 0
    removed: int = 0


@dataclass(frozen=True)
class FilePatch:
    path: str
    created: bool
    deleted: bool
    hunks: tuple[Hunk, ...]
    added: int = 0  # '+' lines
    removed: int = 0  # '-' lines


@dataclass(frozen=True)
class Patch:
    """One patch file: its subject, recorded hashes and per-file hunks."""

    name: str
    subject: str
    files: tuple[FilePatch, ...]
    sha_before: Mapping[str, str]  # path -> sha256 hex or ABSENT
    sha_after: Mapping[str, str]
    upstream: str = ""

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)


@dataclass(frozen=True)
class Plan:
    """What ``apply``/``revert`` found and would write; nothing is written yet."""

    root: Path
    action: str  # "apply" or "revert"
    series: tuple[Patch, ...]
    applied_before: int  # the tree had this many patches of the series applied
    writes: Mapping[str, bytes | None]  # path -> new content (None: delete the file)
    originals: Mapping[str, bytes | None]
    mismatched: tuple[str, ...] = ()  # files whose bytes differ from the recorded sha256
    steps: tuple[tuple[str, str], ...] = field(default=())  # (patch name, status)

    @property
    def changes(self) -> bool:
        return bool(self.writes)

    @property
    def exact(self) -> bool:
        """Every file matches the recorded sha256 of the pristine or patched tree."""
        return not self.mismatched


# ---------------------------------------------------------------- parsing

def split_lines(data: bytes) -> list[bytes]:
    """Lines with their ends; only LF ends a line, so CRLF files keep their CR."""
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def parse_patch(data: bytes, name: str = "<patch>") -> Patch:
    """Parse one patch file (an optional mail-style header, then ``diff --git`` blocks)."""
    lines = split_lines(data)
    first = next((i for i, line in enumerate(lines) if line.startswith(b"diff --git ")), None)
    if first is None:
        raise PatchError(f"{name}: no 'diff --git' section")
    subject, upstream = "", ""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    for raw in lines[:first]:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        key, _, value = line.partition(": ")
        if key == "Subject":
            subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", value)
        elif key == "Upstream":
            upstream = value
        elif key in ("Sha256-Before", "Sha256-After"):
            digest, _, path = value.partition(" ")
            if not (digest == ABSENT or re.fullmatch(r"[0-9a-f]{64}", digest)) or not path:
                raise PatchError(f"{name}: malformed header line {line!r}")
            (before if key == "Sha256-Before" else after)[path] = digest
    files = []
    i = first
    while i < len(lines):
        fp, i = _parse_file(lines, i, name)
        files.append(fp)
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise PatchError(f"{name}: a file appears twice")
    return Patch(name, subject, tuple(files), before, after, upstream)


def _parse_file(lines: list[bytes], i: int, name: str) -> tuple[FilePatch, int]:
    m = re.match(rb"^diff --git a/(\S+) b/(\S+)\s*$", lines[i])
    if not m or m.group(1) != m.group(2):
        raise PatchError(f"{name}: unsupported diff header {lines[i]!r} (renames are not supported)")
    path = _safe_path(m.group(1).decode(), name)
    created = deleted = False
    i += 1
    while i < len(lines) and not lines[i].startswith(b"--- "):
        if lines[i].startswith(b"diff --git ") or lines[i].startswith(b"Binary files"):
            raise PatchError(f"{name}: {path}: only text changes are supported")
        created |= lines[i].startswith(b"new file mode")
        deleted |= lines[i].startswith(b"deleted file mode")
        i += 1
    if i + 1 >= len(lines) or not lines[i + 1].startswith(b"+++ "):
        raise PatchError(f"{name}: {path}: missing ---/+++ lines")
    old_name = lines[i][4:].rstrip(b"\r\n")
    new_name = lines[i + 1][4:].rstrip(b"\r\n")
    if (old_name == b"/dev/null") != created or (new_name == b"/dev/null") != deleted:
        raise PatchError(f"{name}: {path}: ---/+++ lines disagree with the file mode lines")
    for side, expect in ((old_name, b"a/"), (new_name, b"b/")):
        if side != b"/dev/null" and side != expect + path.encode():
            raise PatchError(f"{name}: {path}: ---/+++ name {side!r} differs from the diff header")
    i += 2
    hunks = []
    while i < len(lines) and lines[i].startswith(b"@@"):
        hunk, i = _parse_hunk(lines, i, name, path)
        hunks.append(hunk)
    if not hunks:
        raise PatchError(f"{name}: {path}: no hunks")
    if i < len(lines) and not lines[i].startswith(b"diff --git "):
        raise PatchError(f"{name}: {path}: unexpected line {lines[i]!r} after the last hunk")
    if created and (len(hunks) != 1 or hunks[0].old):
        raise PatchError(f"{name}: {path}: a new file must be one hunk of added lines")
    if deleted and (len(hunks) != 1 or hunks[0].new):
        raise PatchError(f"{name}: {path}: a deleted file must be one hunk of removed lines")
    return FilePatch(path, created, deleted, tuple(hunks),
                     sum(h.added for h in hunks), sum(h.removed for h in hunks)), i


def _parse_hunk(lines: list[bytes], i: int, name: str, path: str) -> tuple[Hunk, int]:
    m = _HUNK_RE.match(lines[i])
    if not m:
        raise PatchError(f"{name}: {path}: malformed hunk header {lines[i]!r}")
    header = lines[i].decode("utf-8", "replace").rstrip("\r\n")
    old_start, new_start = int(m.group(1)), int(m.group(3))
    old_len = 1 if m.group(2) is None else int(m.group(2))
    new_len = 1 if m.group(4) is None else int(m.group(4))
    old: list[bytes] = []
    new: list[bytes] = []
    counts = {b"+": 0, b"-": 0, b" ": 0}
    last = b""
    i += 1
    while i < len(lines) and (len(old) < old_len or len(new) < new_len
                              or lines[i].startswith(_NO_EOL)):
        line = lines[i]
        if line.startswith(_NO_EOL):
            # the previous line has no line end in the file
            if last in (b" ", b"-"):
                old[-1] = old[-1][:-1]
            if last in (b" ", b"+"):
                new[-1] = new[-1][:-1]
        elif line in (b"\n", b"\r\n"):  # a blank context line whose space was stripped
            old.append(line)
            new.append(line)
            last = b" "
        elif line[:1] in (b" ", b"-", b"+"):
            last = line[:1]
            counts[last] += 1
            if last in (b" ", b"-"):
                old.append(line[1:])
            if last in (b" ", b"+"):
                new.append(line[1:])
        else:
            break
        i += 1
    if len(old) != old_len or len(new) != new_len:
        raise PatchError(f"{name}: {path}: hunk {header!r} has {len(old)}/{len(new)} lines, "
                         f"its header says {old_len}/{new_len}")
    return Hunk(header, old_start, new_start, tuple(old), tuple(new),
                counts[b"+"], counts[b"-"]), i


def _safe_path(path: str, name: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or ".." in parts or "\\" in path:
        raise PatchError(f"{name}: refusing path {path!r} outside the tree")
    return path


# ---------------------------------------------------------------- applying

def apply_file(fp: FilePatch, content: bytes | None, reverse: bool = False) -> bytes | None:
    """The file after ``fp`` (or its reverse); raises PatchError naming the failing hunk."""
    creates, deletes = (fp.deleted, fp.created) if reverse else (fp.created, fp.deleted)
    if creates:
        if content is not None:
            raise PatchError(f"{fp.path}: exists, but the patch creates it")
        hunk = fp.hunks[0]
        return b"".join(hunk.old if reverse else hunk.new)
    if content is None:
        raise PatchError(f"{fp.path}: file not found")
    lines = split_lines(content)
    out: list[bytes] = []
    pos = 0
    offset = 0
    for number, hunk in enumerate(fp.hunks, 1):
        old, new = (hunk.new, hunk.old) if reverse else (hunk.old, hunk.new)
        start = (hunk.new_start if reverse else hunk.old_start) - (1 if old else 0)
        at = _find(lines, old, start + offset, pos)
        if at is None:
            text = "patched" if reverse else "original"
            where = f"hunk {number} of {len(fp.hunks)} ({hunk.header})"
            error = PatchError(f"{fp.path}: {where} does not match the {text} text: "
                               f"{_first_difference(lines, old, max(start + offset, pos))}")
            error.matched = number - 1
            raise error
        out.extend(lines[pos:at])
        out.extend(new)
        pos = at + len(old)
        offset = at - start
    out.extend(lines[pos:])
    result = b"".join(out)
    if deletes:
        if result:
            raise PatchError(f"{fp.path}: has lines the patch does not delete")
        return None
    return result


def _find(lines: list[bytes], block: Sequence[bytes], expected: int, lo: int) -> int | None:
    """Index where ``block`` occurs, nearest to ``expected`` and not before ``lo``."""
    block = list(block)
    hi = len(lines) - len(block)
    if hi < lo:
        return None
    expected = min(max(expected, lo), hi)
    for distance in range(0, max(expected - lo, hi - expected) + 1):
        for at in (expected - distance, expected + distance):
            if lo <= at <= hi and lines[at:at + len(block)] == block:
                return at
    return None


def _first_difference(lines: list[bytes], block: Sequence[bytes], at: int) -> str:
    for k, want in enumerate(block):
        if at + k >= len(lines):
            return f"the file ends at line {len(lines)}, the patch expects {_show(want)} there"
        if lines[at + k] != want:
            return f"line {at + k + 1} is {_show(lines[at + k])}, the patch expects {_show(want)}"
    return "the lines are there but out of order with the previous hunk"


def _show(line: bytes) -> str:
    text = line.decode("utf-8", "replace").rstrip("\n")
    return repr(text if len(text) <= 70 else text[:67] + "...")


def apply_patch(patch: Patch, tree: Mapping[str, bytes | None],
                reverse: bool = False) -> dict[str, bytes | None]:
    """``tree`` (path -> content or None) after one patch; the input is not changed."""
    out = dict(tree)
    matched = 0
    for fp in patch.files:
        try:
            out[fp.path] = apply_file(fp, out.get(fp.path), reverse)
        except PatchError as exc:
            error = PatchError(f"{patch.name}: {exc}")
            error.matched = matched + exc.matched
            raise error from None
        matched += len(fp.hunks)
    return out


# ---------------------------------------------------------------- the series

def patch_dir() -> Path:
    """Where the patch files are: the repository's top-level ``patches/`` folder, which
    setup.cfg installs as the data package ``uvq_int8.patches``."""
    spec = importlib.util.find_spec("uvq_int8.patches")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise PatchError("the patch files are not installed (uvq_int8.patches is missing); "
                         "reinstall uvq-int8")
    return Path(locations[0])


def load_series(directory: str | Path | None = None) -> tuple[Patch, ...]:
    """Every ``*.patch`` in ``directory`` (default: the packaged ones), in name order."""
    directory = patch_dir() if directory is None else Path(directory)
    files = sorted(directory.glob("*.patch"))
    if not files:
        raise PatchError(f"no patch files in {directory}")
    return tuple(parse_patch(f.read_bytes(), f.name) for f in files)


def sha256_bytes(data: bytes | None) -> str:
    """The sha256 a patch header records for a file's bytes (ABSENT: no file)."""
    return ABSENT if data is None else util.sha256_bytes(data)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def plan(root: str | Path, revert: bool = False,
         series: Sequence[Patch] | None = None) -> Plan:
    """Work out, in memory, what applying (or reverting) the series would write."""
    root = Path(root).expanduser()
    series = tuple(load_series() if series is None else series)
    if not root.is_dir():
        raise PatchError(f"{root} is not a directory")
    paths = sorted({path for p in series for path in p.paths})
    current = {path: _read(root / path) for path in paths}
    _check_looks_like_upstream(root, series, current)

    applied, pristine = _applied_prefix(series, current)
    patched = dict(current)
    for patch in series[applied:]:  # the rest must apply, or the tree is something else
        try:
            patched = apply_patch(patch, patched)
        except PatchError as forward:
            closest = _closest_mismatch(series, current, patch, patched, forward)
            state = (f"{applied} of {len(series)} patches are applied, the next one does not fit"
                     if applied else "neither the original nor the patched files")
            raise PatchError(f"{root} does not match {UPSTREAM_REPO} {UPSTREAM_COMMIT[:7]} "
                             f"({state}); {closest}") from None

    target = pristine if revert else patched
    writes = {p: target[p] for p in paths if target[p] != current[p]}
    expected = recorded_sha256(series, final=not revert)
    mismatched = tuple(p for p in paths if p in expected and sha256_bytes(target[p]) != expected[p])
    steps = []
    for i, patch in enumerate(series):
        if revert:
            steps.append((patch.name, "reverted" if i < applied else "not applied"))
        else:
            steps.append((patch.name, "already applied" if i < applied else "applied"))
    return Plan(root, "revert" if revert else "apply", series, applied, writes, current,
                mismatched, tuple(steps))


def _closest_mismatch(series: Sequence[Patch], current: Mapping[str, bytes | None],
                      failed: Patch, tree: Mapping[str, bytes | None],
                      forward: PatchError) -> PatchError:
    """Of the ways the tree fails to match, the one that matched the most hunks
    before failing: in a patched tree with one changed line, that names the hunk
    that differs from the patched text, not the first hunk of the original."""
    candidates = [forward]
    try:
        apply_patch(failed, tree, reverse=True)
    except PatchError as exc:
        candidates.append(exc)
    unwound, matched = dict(current), 0
    for patch in reversed(series):
        try:
            unwound = apply_patch(patch, unwound, reverse=True)
        except PatchError as exc:
            exc.matched += matched
            candidates.append(exc)
            break
        matched += sum(len(fp.hunks) for fp in patch.files)
    return max(candidates, key=lambda exc: exc.matched)  # ties keep the first


def _check_looks_like_upstream(root: Path, series: Sequence[Patch],
                               current: Mapping[str, bytes | None]) -> None:
    first_touch: dict[str, FilePatch] = {}
    for patch in series:
        for fp in patch.files:
            first_touch.setdefault(fp.path, fp)
    missing = [path for path, fp in first_touch.items() if not fp.created and current[path] is None]
    if missing:
        raise PatchError(f"{root} is not a {UPSTREAM_REPO} checkout: {', '.join(missing)} "
                         f"not found (the patches are for commit {UPSTREAM_COMMIT[:7]})")


def _applied_prefix(series: Sequence[Patch],
                    current: Mapping[str, bytes | None]) -> tuple[int, dict[str, bytes | None]]:
    """How many leading patches the tree has, and the tree with them taken out."""
    for count in range(len(series), 0, -1):
        tree = dict(current)
        try:
            for patch in reversed(series[:count]):
                tree = apply_patch(patch, tree, reverse=True)
        except PatchError:
            continue
        return count, tree
    return 0, dict(current)


def recorded_sha256(series: Sequence[Patch], final: bool) -> dict[str, str]:
    """path -> sha256 of the upstream file (or, with ``final``, the fully patched one),
    as the patch headers record it; ``ABSENT`` for a file that does not exist."""
    out: dict[str, str] = {}
    for patch in (reversed(series) if final else series):
        for path in patch.paths:
            digest = (patch.sha_after if final else patch.sha_before).get(path)
            if digest and path not in out:
                out[path] = digest
    return out


def write(p: Plan) -> None:
    """Write a plan's files, each atomically (``uvq_int8.util``).

    If any write fails, the files already replaced get their old bytes back.
    """
    done: list[str] = []
    try:
        for rel, data in sorted(p.writes.items()):
            target = p.root / rel
            if data is None:
                target.unlink()
            else:
                atomic_write_bytes(target, data)
            done.append(rel)
    except OSError as exc:
        if not done:
            raise PatchError(f"cannot write in {p.root}: {exc}; nothing was changed") from None
        for rel in done:  # put back what was already replaced
            old = p.originals[rel]
            if old is None:
                (p.root / rel).unlink(missing_ok=True)
            else:
                atomic_write_bytes(p.root / rel, old)
        raise PatchError(f"writing {p.root} failed ({exc}); the files were restored") from None


def apply(root: str | Path, check: bool = False,
          series: Sequence[Patch] | None = None) -> Plan:
    """Apply the series (patches already there are skipped); ``check`` writes nothing."""
    result = plan(root, revert=False, series=series)
    if not check:
        write(result)
    return result


def revert(root: str | Path, check: bool = False,
           series: Sequence[Patch] | None = None) -> Plan:
    """Take the series out again, restoring the files byte for byte."""
    result = plan(root, revert=True, series=series)
    if not check:
        write(result)
    return result


# ---------------------------------------------------------------- writing patches

def unified_diff(path: str, before: bytes | None, after: bytes | None,
                 context: int = 3) -> bytes:
    """A ``diff --git`` section turning ``before`` into ``after`` (None: no file)."""
    a = split_lines(before or b"")
    b = split_lines(after or b"")
    head = [f"diff --git a/{path} b/{path}\n".encode()]
    if before is None:
        head.append(b"new file mode 100644\n")
    elif after is None:
        head.append(b"deleted file mode 100644\n")
    head.append(b"--- /dev/null\n" if before is None else f"--- a/{path}\n".encode())
    head.append(b"+++ /dev/null\n" if after is None else f"+++ b/{path}\n".encode())
    body: list[bytes] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    groups = ([[("replace", 0, len(a), 0, len(b))]] if before is None or after is None
              else matcher.get_grouped_opcodes(context))
    for group in groups:
        i1, i2 = group[0][1], group[-1][2]
        j1, j2 = group[0][3], group[-1][4]
        body.append(f"@@ -{_range(i1, i2 - i1)} +{_range(j1, j2 - j1)} @@\n".encode())
        for tag, x1, x2, y1, y2 in group:
            if tag == "equal":
                body.extend(_diff_line(b" ", line) for line in a[x1:x2])
                continue
            body.extend(_diff_line(b"-", line) for line in a[x1:x2])
            body.extend(_diff_line(b"+", line) for line in b[y1:y2])
    return b"".join(head + body) if body else b""


def _range(start: int, length: int) -> str:
    first = start + 1 if length else start
    return f"{first}" if length == 1 else f"{first},{length}"


def _diff_line(prefix: bytes, line: bytes) -> bytes:
    if line.endswith(b"\n"):
        return prefix + line
    return prefix + line + b"\n" + _NO_EOL + b"\n"
