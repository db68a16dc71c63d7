//! `render --out DIR`: the rendered files written under DIR without ever following a symbolic
//! link below it (every directory is opened relative to its parent with `O_NOFOLLOW`, a link in
//! the way is refused), and each file created with its final mode: a sensitive file is 0600
//! from the moment it exists, never readable under the umask's mode before a chmod.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// The output directory, opened once.
pub struct OutputDir {
    root: OwnedFd,
    path: PathBuf,
    /// The directories of the last file written, each opened below the one before: the next
    /// file reuses the part of the path it shares (files come host by host, role by role).
    open: Vec<(String, OwnedFd)>,
}

/// A file that could not be written, and why.
#[derive(Debug)]
pub struct WriteError {
    /// The path (under the output directory) of the component at fault.
    pub path: PathBuf,
    pub message: String,
    /// A link, or something else than a directory or file where one is needed.
    pub refused: bool,
}

impl OutputDir {
    /// Open (creating it when missing) the output directory. The directory itself is the user's
    /// choice and may be reached through links; nothing below it is.
    pub fn open(path: &Path) -> Result<Self, WriteError> {
        let failed = |e: std::io::Error| WriteError {
            path: path.to_path_buf(),
            message: e.to_string(),
            refused: false,
        };
        std::fs::create_dir_all(path).map_err(failed)?;
        let root = rfs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed(e.into()))?;
        Ok(Self {
            root,
            path: path.to_path_buf(),
            open: Vec::new(),
        })
    }

    /// Write `content` to `relative` (e.g. `pg1/etc/patroni/config.yml`), creating the
    /// directories on the way (0755) and the file with `mode` from its creation on. An existing
    /// file is replaced atomically (a new file renamed over it).
    pub fn write(&mut self, relative: &str, content: &[u8], mode: u32) -> Result<(), WriteError> {
        let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
        let Some((name, directories)) = parts.split_last() else {
            return Err(self.error(relative, "an empty path".into(), true));
        };
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(self.error(relative, "`.` or `..` in the path".into(), true));
        }
        // Keep the directories this file shares with the last one, open the rest.
        let shared = self
            .open
            .iter()
            .zip(directories.iter())
            .take_while(|((open, _), wanted)| open == *wanted)
            .count();
        self.open.truncate(shared);
        let mut walked: PathBuf = directories[..shared].iter().collect();
        for part in &directories[shared..] {
            walked.push(part);
            let parent = self.current();
            match rfs::mkdirat(parent, *part, Mode::from(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(self.error(&walked, e.to_string(), false)),
            }
            let opened = rfs::openat(
                parent,
                *part,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.explain(parent, part, &walked, e))?;
            self.open.push(((*part).to_owned(), opened));
        }
        let directory = self.current();
        let target = walked.join(name);
        let exists = match rfs::statat(directory, *name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => true,
                FileType::Symlink => {
                    return Err(self.error(&target, "it is a symbolic link".into(), true))
                }
                _ => return Err(self.error(&target, "it is not a regular file".into(), true)),
            },
            Err(Errno::NOENT) => false,
            Err(e) => return Err(self.error(&target, e.to_string(), false)),
        };
        let failed = |e: std::io::Error| self.error(&target, e.to_string(), false);
        // A new file is created under its name; an existing one is replaced by a new file renamed
        // over it. O_EXCL | O_NOFOLLOW: always a fresh file, never a link planted meanwhile. The
        // umask can only take permissions away; fchmod then sets exactly `mode` before any
        // content is written.
        let temporary = format!(".{name}.pgstrap-tmp");
        let create_as = if exists { temporary.as_str() } else { *name };
        let create = || {
            rfs::openat(
                directory,
                create_as,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from(mode & 0o7777),
            )
        };
        let file = match create() {
            // A temporary file left by an interrupted run.
            Err(Errno::EXIST) if exists => {
                rfs::unlinkat(directory, create_as, AtFlags::empty())
                    .map_err(|e| failed(e.into()))?;
                create()
            }
            other => other,
        }
        .map_err(|e| failed(e.into()))?;
        rfs::fchmod(&file, Mode::from(mode & 0o7777)).map_err(|e| failed(e.into()))?;
        std::fs::File::from(file)
            .write_all(content)
            .map_err(failed)?;
        if exists {
            rfs::renameat(directory, create_as, directory, *name).map_err(|e| failed(e.into()))?;
        }
        Ok(())
    }

    /// Whether `relative` can be written, without writing or creating anything: every part of
    /// it that exists is a directory (the last a regular file), none a link. `render --out`
    /// checks every file first, so a refusal leaves the output directory as it was.
    pub fn check(&self, relative: &str) -> Result<(), WriteError> {
        let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(self.error(relative, "an empty path, or `.` or `..` in it".into(), true));
        }
        let mut directory: Option<OwnedFd> = None;
        let mut walked = PathBuf::new();
        for (i, part) in parts.iter().enumerate() {
            walked.push(part);
            let parent = directory
                .as_ref()
                .map_or(self.root.as_fd(), |fd| fd.as_fd());
            let kind = match rfs::statat(parent, *part, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                // The rest is created.
                Err(Errno::NOENT) => return Ok(()),
                Err(e) => return Err(self.error(&walked, e.to_string(), false)),
            };
            let last = i + 1 == parts.len();
            match kind {
                FileType::Symlink => {
                    return Err(self.error(&walked, "it is a symbolic link".into(), true))
                }
                FileType::RegularFile if last => return Ok(()),
                FileType::Directory if !last => {}
                _ if last => {
                    return Err(self.error(&walked, "it is not a regular file".into(), true))
                }
                _ => return Err(self.error(&walked, "it is not a directory".into(), true)),
            }
            let opened = rfs::openat(
                parent,
                *part,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.explain(parent, part, &walked, e))?;
            directory = Some(opened);
        }
        Ok(())
    }

    /// The directory the last path ended in (the output directory at first).
    fn current(&self) -> BorrowedFd<'_> {
        self.open
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd())
    }

    /// Why a directory could not be opened: a link or a non-directory is refused by name.
    fn explain(&self, parent: BorrowedFd, part: &str, walked: &Path, error: Errno) -> WriteError {
        let kind = rfs::statat(parent, part, AtFlags::SYMLINK_NOFOLLOW)
            .map(|s| FileType::from_raw_mode(s.st_mode))
            .ok();
        match (error, kind) {
            (_, Some(FileType::Symlink)) | (Errno::LOOP, _) => {
                self.error(walked, "it is a symbolic link".into(), true)
            }
            (Errno::NOTDIR, _) => self.error(walked, "it is not a directory".into(), true),
            (e, _) => self.error(walked, e.to_string(), false),
        }
    }

    fn error(&self, relative: impl AsRef<Path>, message: String, refused: bool) -> WriteError {
        WriteError {
            path: self.path.join(relative),
            message,
            refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_get_their_mode_and_directories_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = OutputDir::open(&dir.path().join("out")).unwrap();
        out.write("pg1/etc/patroni/config.yml", b"secret", 0o600)
            .unwrap();
        out.write("pg1/etc/patroni/config.yml", b"secret 2", 0o600)
            .unwrap();
        let file = dir.path().join("out/pg1/etc/patroni/config.yml");
        assert_eq!(std::fs::read(&file).unwrap(), b"secret 2");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_symlink_below_the_output_directory_is_refused() {
        // Regression (issue 11): a link planted in the output directory redirected the Patroni
        // configuration, passwords and all, to the link's target.
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let root = dir.path().join("out");
        std::fs::create_dir_all(root.join("pg1/etc")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("pg1/etc/patroni")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("file"), root.join("pg1/etc/leaf")).unwrap();
        let mut out = OutputDir::open(&root).unwrap();
        let error = out
            .write("pg1/etc/patroni/config.yml", b"secret", 0o600)
            .unwrap_err();
        assert!(
            error.refused && error.message.contains("symbolic link"),
            "{error:?}"
        );
        assert!(error.path.ends_with("pg1/etc/patroni"), "{error:?}");
        let error = out.write("pg1/etc/leaf", b"secret", 0o600).unwrap_err();
        assert!(error.refused, "{error:?}");
        // The check before any write finds both, and writes nothing.
        assert!(out.check("pg1/etc/patroni/config.yml").unwrap_err().refused);
        assert!(out.check("pg1/etc/leaf").unwrap_err().refused);
        out.check("pg2/etc/patroni/config.yml").unwrap();
        assert!(!root.join("pg2").exists());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
