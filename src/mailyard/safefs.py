"""Writing as root in a directory another user owns, without ever following that user's links.

Root renders files into directories the mail owner (`mailyard`) or ClamAV's user owns: spamd's
user_prefs, ClamAV's database and log directories, the queue and the mailboxes. Through a path,
every such write follows whatever that user has put in the way: a symlink named like the
temporary file turns root's write into a root-owned file anywhere on the machine, and a chown
of a link's target gives away any file. Here every path is walked one component at a time from
a directory the caller trusts (one root owns), each component opened with O_NOFOLLOW, and every
create, chown, chmod and rename is done relative to the directory descriptor found that way
(openat and friends). A link in the way is refused (UnsafePath), never followed.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Opening a directory only to use it as a base of *at calls needs no read permission (O_PATH),
# so this works for an ordinary user's node under 0711 directories too.
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_READ_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Opening an existing file to change its owner or mode: O_PATH, never a link. Not a real open:
# closing a real descriptor of a file drops every POSIX lock this process holds on it, and
# SQLite's locks on the store (open in the same process) must survive a chown of db/. An
# O_PATH descriptor takes no part in locks; its owner and mode are changed through
# /proc/self/fd, which names exactly that inode.
_INODE_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A path below a trusted directory is a link or not what it should be; nothing was done."""


Owner = tuple[int, int] | None


def _parts(rel: str | os.PathLike[str]) -> list[str]:
    text = os.fspath(rel)
    if text.startswith("/"):
        raise ValueError(f"{text!r} must be relative to its base directory")
    parts = [p for p in text.split("/") if p and p != "."]
    if ".." in parts:
        raise ValueError(f"{text!r} may not contain ..")
    return parts


def open_base(base: Path) -> int:
    """An O_PATH descriptor of `base`, the trusted starting point (links in it are the
    administrator's own choice, so they are followed here, and only here)."""
    return os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _open_child_dir(parent_fd: int, name: str, create_mode: int | None, owner: Owner) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if create_mode is None:
            raise
    except OSError as exc:  # a link (O_NOFOLLOW with O_DIRECTORY: ENOTDIR), or a file
        if _is_link(parent_fd, name):
            raise UnsafePath(f"{name} is a symbolic link; not followed") from exc
        raise
    try:
        os.mkdir(name, create_mode, dir_fd=parent_fd)
    except FileExistsError:
        pass  # made meanwhile (by us or someone else): opened, and checked, just below
    else:
        # the umask narrowed the mode, and the new directory may be for another user
        fd = os.open(name, _DIR_READ_FLAGS, dir_fd=parent_fd)
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, create_mode)
        finally:
            os.close(fd)
    return _open_dir_checked(parent_fd, name)


def _open_dir_checked(parent_fd: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if _is_link(parent_fd, name):
            raise UnsafePath(f"{name} is a symbolic link; not followed") from exc
        raise


def _is_link(parent_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_dir(base: Path, rel: str | os.PathLike[str] = "", create_mode: int | None = None,
             owner: Owner = None) -> int:
    """An O_PATH descriptor of base/rel, every component below `base` opened without
    following a link (UnsafePath names the one in the way). With `create_mode`, missing
    directories are made with that mode and given to `owner` ((uid, gid), None: as made)."""
    fd = open_base(base)
    try:
        for name in _parts(rel):
            try:
                child = _open_child_dir(fd, name, create_mode, owner)
            except UnsafePath as exc:
                raise UnsafePath(f"{base / rel}: {exc}") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def directory(base: Path, rel: str | os.PathLike[str] = "", create_mode: int | None = None,
              owner: Owner = None) -> Iterator[int]:
    fd = open_dir(base, rel, create_mode, owner)
    try:
        yield fd
    finally:
        os.close(fd)


def _fd_path(fd: int) -> str:
    """A path naming exactly the directory behind `fd` (for calls without a dir_fd form)."""
    return f"/proc/self/fd/{fd}"


def write_file(base: Path, rel: str | os.PathLike[str], data: bytes | str, mode: int = 0o644,
               owner: Owner = None, dir_mode: int | None = 0o755, dir_owner: Owner = None,
               sync: bool = False) -> None:
    """Replace base/rel with `data` atomically: a new temporary file (O_EXCL, O_NOFOLLOW)
    given `mode` and `owner` before a byte is written, then renamed over the old name, all
    relative to a descriptor of the directory (missing directories made with `dir_mode` for
    `dir_owner`). A link planted at either name is replaced or refused, never followed."""
    parts = _parts(rel)
    if not parts:
        raise ValueError("write_file needs a file name")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    name = parts[-1]
    with directory(base, "/".join(parts[:-1]), dir_mode, dir_owner) as dfd:
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dfd)
        try:
            try:
                if owner is not None:
                    os.fchown(fd, *owner)
                os.fchmod(fd, mode)
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
        if sync:
            sync_fd = os.open(_fd_path(dfd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(sync_fd)
            finally:
                os.close(sync_fd)


def mkdirs(base: Path, rel: str | os.PathLike[str], mode: int = 0o755,
           owner: Owner = None) -> None:
    """mkdir -p of base/rel below `base`, never through a link; new levels get `mode`, `owner`."""
    with directory(base, rel, mode, owner):
        pass


def _fix_entry(dir_fd: int, name: str, uid: int, gid: int, mode: int | None) -> None:
    """chown (and chmod) one entry of a directory: a regular file or directory through a
    descriptor opened without following links; anything else (a link, a socket) is left."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return  # links are not followed; a link's own owner gives nothing away
    try:
        fd = os.open(name, _INODE_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, OSError):
        return  # replaced meanwhile (by a link: O_NOFOLLOW refused it)
    try:
        _fix_fd(fd, uid, gid, mode)
    finally:
        os.close(fd)


def _fix_fd(fd: int, uid: int, gid: int, mode: int | None) -> None:
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return  # a link (O_PATH|O_NOFOLLOW opened the link itself), a socket, a FIFO
    # A second name of a file is how someone else's file gets into a directory its owner
    # controls: never give such a file away (its owner already being ours changes nothing).
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and st.st_uid != uid:
        return
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(_fd_path(fd), uid, gid)
    if mode is not None and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(_fd_path(fd), mode)


def chown_tree(base: Path, rel: str | os.PathLike[str], uid: int, gid: int) -> None:
    """Give base/rel and everything below it to uid:gid, walking by descriptors (os.fwalk)
    so that a directory swapped for a link during the walk is never entered."""
    with directory(base) as base_fd:
        parts = _parts(rel)
        if parts:
            with directory(base, "/".join(parts[:-1])) as parent_fd:
                if _is_link(parent_fd, parts[-1]):
                    raise UnsafePath(f"{base / rel} is a symbolic link; not followed")
                _fix_entry(parent_fd, parts[-1], uid, gid, None)
        top_fd = open_dir(base, rel) if parts else os.dup(base_fd)
    try:
        for _, dirnames, filenames, dfd in os.fwalk(".", dir_fd=top_fd, follow_symlinks=False):
            for name in dirnames + filenames:
                _fix_entry(dfd, name, uid, gid, None)
    finally:
        os.close(top_fd)


def chmod_file(base: Path, rel: str | os.PathLike[str], mode: int, owner: Owner = None) -> bool:
    """Set the mode (and owner) of the file base/rel without following a link; False when
    it is missing."""
    parts = _parts(rel)
    with directory(base, "/".join(parts[:-1])) as dfd:
        if _is_link(dfd, parts[-1]):
            raise UnsafePath(f"{base / rel} is a symbolic link; not followed")
        try:
            fd = os.open(parts[-1], _INODE_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            return False
        try:
            st = os.fstat(fd)
            uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
            _fix_fd(fd, uid, gid, mode)
        finally:
            os.close(fd)
    return True


def open_append(base: Path, rel: str | os.PathLike[str], mode: int = 0o640,
                owner: Owner = None) -> int:
    """A descriptor to append to base/rel, created with `mode` for `owner` when missing;
    never through a link."""
    parts = _parts(rel)
    with directory(base, "/".join(parts[:-1])) as dfd:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(parts[-1], flags, mode, dir_fd=dfd)
        except OSError as exc:
            if _is_link(dfd, parts[-1]):
                raise UnsafePath(f"{base / rel} is a symbolic link; not followed") from exc
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnsafePath(f"{base / rel} is not a regular file")
        if owner is not None and (st.st_uid, st.st_gid) != owner and st.st_nlink == 1:
            os.fchown(fd, *owner)
        return fd


def relative_to(base: Path, path: Path) -> str:
    """`path` below `base`, as the relative text the functions above take."""
    return os.fspath(Path(path).relative_to(base))


def chown(base: Path, rel: str | os.PathLike[str], uid: int, gid: int,
          mode: int | None = None) -> bool:
    """Give base/rel (a file or directory, never a link's target) to uid:gid, and `mode`
    when given; False when it is missing."""
    parts = _parts(rel)
    if not parts:
        raise ValueError("chown needs a name below its base directory")
    with directory(base, "/".join(parts[:-1])) as dfd:
        if _is_link(dfd, parts[-1]):
            raise UnsafePath(f"{base / rel} is a symbolic link; not followed")
        try:
            os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        _fix_entry(dfd, parts[-1], uid, gid, mode)
    return True


def restrict_tree(base: Path, rel: str | os.PathLike[str], remove: int) -> None:
    """Take the permission bits `remove` (e.g. 0o027) from base/rel and every file and
    directory below it, walking by descriptors and never through a link."""
    with directory(base, rel) as top:
        walk_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=top)
    try:
        _restrict_fd(walk_fd, remove)
        for _, dirnames, filenames, dfd in os.fwalk(".", dir_fd=walk_fd,
                                                    follow_symlinks=False):
            for name in dirnames + filenames:
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                        continue
                    fd = os.open(name, _INODE_FLAGS, dir_fd=dfd)
                except OSError:
                    continue  # gone or replaced by a link meanwhile
                try:
                    _restrict_fd(fd, remove)
                finally:
                    os.close(fd)
    finally:
        os.close(walk_fd)


def _restrict_fd(fd: int, remove: int) -> None:
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        return  # a second name of someone else's file: not ours to change
    mode = stat.S_IMODE(st.st_mode)
    if mode & remove:
        os.chmod(_fd_path(fd), mode & ~remove)
