//! Finding manifest files and reading them: the loader's only file-system access.
//!
//! Manifests are untrusted input (a pull request writes them; CI reads them with the admin
//! password in its environment), so this module opens as little as it can:
//! - Only regular files are read. A path named on the command line that is anything else (a
//!   FIFO, a device, a socket) is a problem; such an entry met while walking a directory is
//!   skipped with a warning. The type is checked before a file is opened, because opening a
//!   FIFO blocks and reading `/dev/zero` never ends.
//! - A symbolic link is followed only when its target (file or directory) lies inside one of
//!   the paths given, canonicalised, as Git keeps links inside the work tree. A path given
//!   whose last component is itself a link stands for the link, not its target: `ozform
//!   validate m/*.yaml` must not follow `m/x.yaml -> /proc/self/environ`. A link anywhere else
//!   is a problem that names the link; its target is never opened and never named.
//! - A file is at most `MAX_FILE_BYTES` (checked on the open file before reading, then
//!   enforced while reading, so a file that grows or reports no size cannot pass it), and all
//!   files together at most `MAX_TOTAL_BYTES`.
//!
//! A directory is searched recursively for `*.yaml` / `*.yml`, each directory once (so a link
//! loop cannot hang the walk); a file named directly is read whatever its extension. The result
//! is sorted and free of duplicates. A leading byte order mark is dropped; a file that is not
//! UTF-8 is returned with where its first bad byte is, so that the problem can point at it.
//!
//! What remains: a file replaced by a FIFO between the check and the open would block. The
//! manifests are a checkout that nothing changes while ozform runs, so this is accepted.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, FileType};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::problem::{Kind, Problem, Problems};
use super::{MAX_FILE_BYTES, printable};
use crate::secret::{SecretRoots, checkout_root, normalize};

/// A manifest file to read: its path as the user wrote or walked it, and the path to open
/// (the canonical target when reached through a link, checked to lie inside the paths given).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Manifest {
    pub path: PathBuf,
    open: PathBuf,
}

/// Something skipped while finding manifests: the commands print it as `warning: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: PathBuf,
    /// What it is instead of a regular file: "a FIFO", "a socket", ….
    pub what: &'static str,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped `{}`: it is {}, not a regular file", printable::path(&self.path), self.what)
    }
}

/// Every manifest file under `paths`, sorted; problems for paths that cannot or must not be
/// read; a warning for each special file skipped in a directory.
///
/// Links are followed last, after every real directory is walked: a link inside the paths
/// given leads to a file or directory that is read anyway, so it is read once, under its
/// real path.
pub fn discover(paths: &[PathBuf], problems: &mut Problems, warn: &dyn Fn(&Warning)) -> Vec<Manifest> {
    let paths: Vec<PathBuf> = paths.iter().map(|p| without_trailing_separator(p)).collect();
    let roots: Vec<PathBuf> = paths.iter().filter_map(|p| root(p)).collect();
    let mut walk = Walk {
        roots: &roots,
        problems,
        warn,
        files: Vec::new(),
        opened: HashSet::new(),
        visited: HashSet::new(),
        links: Vec::new(),
        given_directories: Vec::new(),
        manifest_links: Vec::new(),
    };
    for path in &paths {
        match fs::symlink_metadata(path) {
            Err(e) => walk.unreadable(path, &e),
            Ok(meta) if meta.file_type().is_symlink() => walk.links.push((path.clone(), true)),
            Ok(meta) if meta.is_dir() => match fs::canonicalize(path) {
                Ok(real) => walk.given_directory(path, &real),
                Err(e) => walk.unreadable(path, &e),
            },
            Ok(meta) if meta.is_file() => {
                let real = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                walk.file(path.clone(), real);
            }
            Ok(meta) => {
                let what = what(meta.file_type());
                walk.problems.push(Problem::unlocated(Kind::NotAFile { path: path.clone(), what }));
            }
        }
    }
    // Following a link to a directory may find more links: first in, first out, so that the
    // order (and which of two paths to one file is kept) does not depend on the file system.
    let mut next = 0;
    while let Some((link, given)) = walk.links.get(next).cloned() {
        walk.link(&link, given);
        next += 1;
    }
    // A directory given holds manifests if a file was found under it, or a link named like
    // one (refused or not: its problem says more than "no manifests" would).
    for dir in &walk.given_directories {
        let mut found = walk.files.iter().map(|f| &f.path).chain(&walk.manifest_links);
        if !found.any(|path| path.starts_with(dir)) {
            walk.problems.push(Problem::unlocated(Kind::NoManifests { path: dir.clone() }));
        }
    }
    let mut files = walk.files;
    files.sort();
    files
}

/// Where the `{file: PATH}` secrets of the manifests under `paths` may lie: each directory
/// given (for a file given, its directory) and each of `secrets_dirs`; and the checkout root a
/// saved plan records their paths from: the nearest directory at or above the first path given
/// that holds `.git`, else the working directory. Looks at the paths given, never at a secret's.
pub fn secret_roots(paths: &[PathBuf], secrets_dirs: &[PathBuf]) -> SecretRoots {
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut allowed: Vec<PathBuf> = paths
        .iter()
        .map(|path| {
            let path = without_trailing_separator(path);
            if fs::metadata(&path).is_ok_and(|meta| meta.is_dir()) {
                path
            } else {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            }
        })
        .collect();
    allowed.extend(secrets_dirs.iter().filter(|dir| !dir.as_os_str().is_empty()).cloned());
    let first = paths.first().map(|path| normalize(&cwd.join(path)));
    let checkout = first.as_deref().and_then(checkout_root).unwrap_or_else(|| cwd.clone());
    SecretRoots::new(&cwd, &checkout, &allowed)
}

/// Whether `text` is a saved plan (a JSON object with `format_version` and `changes`) rather
/// than a manifest. Values are skipped unread, so a large JSON file costs no memory here.
pub fn is_saved_plan(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        format_version: Option<serde::de::IgnoredAny>,
        changes: Option<serde::de::IgnoredAny>,
    }
    text.trim_start().starts_with('{')
        && serde_json::from_str::<Probe>(text)
            .is_ok_and(|probe| probe.format_version.is_some() && probe.changes.is_some())
}

/// `path` without a trailing `/`, which would make the system follow a link in its last
/// component before ozform can look at it.
fn without_trailing_separator(path: &Path) -> PathBuf {
    let trimmed: PathBuf = path.components().collect();
    if trimmed.as_os_str().is_empty() { path.to_path_buf() } else { trimmed }
}

/// What a path given on the command line admits links into: its canonical form, or for a
/// link, the link's own canonical place (never its target).
fn root(path: &Path) -> Option<PathBuf> {
    let meta = fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(fs::canonicalize(parent).ok()?.join(path.file_name()?))
    } else {
        fs::canonicalize(path).ok()
    }
}

struct Walk<'a> {
    roots: &'a [PathBuf],
    problems: &'a mut Problems,
    warn: &'a dyn Fn(&Warning),
    files: Vec<Manifest>,
    /// Canonical paths of `files`: a file reached twice is read once.
    opened: HashSet<PathBuf>,
    /// Canonical directories walked already.
    visited: HashSet<PathBuf>,
    /// Links met, to follow once every real directory is walked; `true` for a path given.
    links: Vec<(PathBuf, bool)>,
    /// Directories given (as written), each to hold at least one manifest.
    given_directories: Vec<PathBuf>,
    /// Links met in directories whose names are manifests' names.
    manifest_links: Vec<PathBuf>,
}

impl Walk<'_> {
    fn unreadable(&mut self, path: &Path, e: &std::io::Error) {
        self.problems
            .push(Problem::unlocated(Kind::Unreadable { path: path.to_path_buf(), reason: reason(e) }));
    }

    fn file(&mut self, path: PathBuf, real: PathBuf) {
        if self.opened.insert(real.clone()) {
            self.files.push(Manifest { path, open: real });
        }
    }

    /// A directory named on the command line: one without manifests is a problem (unless
    /// walked already, through another path).
    fn given_directory(&mut self, dir: &Path, real: &Path) {
        if self.directory(dir, real) {
            self.given_directories.push(dir.to_path_buf());
        }
    }

    /// Walk `dir` (whose canonical path is `real`) in sorted order, unless walked already.
    fn directory(&mut self, dir: &Path, real: &Path) -> bool {
        if !self.visited.insert(real.to_path_buf()) {
            return false;
        }
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.unreadable(dir, &e);
                return true;
            }
        };
        let mut entries: Vec<(PathBuf, Option<FileType>)> =
            entries.filter_map(Result::ok).map(|entry| (entry.path(), entry.file_type().ok())).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, file_type) in entries {
            let (Some(file_type), Some(name)) = (file_type, path.file_name()) else { continue };
            // Not a link, inside a canonical directory: its canonical path is `real/name`.
            let real = real.join(name);
            if file_type.is_dir() {
                self.directory(&path, &real);
            } else if file_type.is_symlink() {
                if is_manifest_name(&path) {
                    self.manifest_links.push(path.clone());
                }
                self.links.push((path, false));
            } else if !is_manifest_name(&path) {
            } else if file_type.is_file() {
                self.file(path, real);
            } else {
                (self.warn)(&Warning { path, what: what(file_type) });
            }
        }
        true
    }

    /// A symbolic link, named on the command line (`given`) or met in a directory: followed
    /// only into the roots. A link in a directory matters when its name is a manifest's or it
    /// leads to a directory; other links (a `README` pointing anywhere) are not ozform's.
    fn link(&mut self, link: &Path, given: bool) {
        let candidate = given || is_manifest_name(link);
        let broken = |walk: &mut Self| {
            if candidate {
                walk.problems.push(Problem::unlocated(Kind::BrokenLink { link: link.to_path_buf() }));
            }
        };
        let Ok(target) = fs::canonicalize(link) else { return broken(self) };
        // `stat` of the target tells its type without opening or reading it.
        let Ok(meta) = fs::metadata(&target) else { return broken(self) };
        if !candidate && !meta.is_dir() {
            return;
        }
        if !self.roots.iter().any(|root| target.starts_with(root)) {
            self.problems.push(Problem::unlocated(Kind::LinkOutside { link: link.to_path_buf() }));
        } else if given {
            if meta.is_dir() {
                self.given_directory(link, &target);
            } else if meta.is_file() {
                self.file(link.to_path_buf(), target);
            } else {
                let what = what(meta.file_type());
                self.problems.push(Problem::unlocated(Kind::NotAFile { path: link.to_path_buf(), what }));
            }
        } else if meta.is_dir() {
            self.directory(link, &target);
        } else if meta.is_file() {
            self.file(link.to_path_buf(), target);
        } else {
            (self.warn)(&Warning { path: link.to_path_buf(), what: what(meta.file_type()) });
        }
    }
}

fn is_manifest_name(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml")
}

/// What a file that is not a regular file or directory is, in words.
fn what(file_type: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    let _ = file_type;
    "a special file"
}

/// A manifest's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Utf8(String),
    /// Not UTF-8: the text with each bad sequence replaced by U+FFFD (the same bytes up to the
    /// first one), where the first bad byte is, and its value.
    NotUtf8 {
        text: String,
        offset: usize,
        byte: u8,
    },
}

/// The text of a manifest file, or why it cannot be read. `budget` is what all files may
/// still take together; it shrinks by what this one takes.
pub fn read(file: &Manifest, budget: &mut u64) -> Result<Text, Kind> {
    let path = || file.path.clone();
    let unreadable = |e: std::io::Error| Kind::Unreadable { path: path(), reason: reason(&e) };
    let opened = fs::File::open(&file.open).map_err(unreadable)?;
    let meta = opened.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(Kind::NotAFile { path: path(), what: what(meta.file_type()) });
    }
    let too_large = |size: u64| {
        if size > MAX_FILE_BYTES {
            Some(Kind::TooLarge { path: path() })
        } else if size > *budget {
            Some(Kind::TooLargeInTotal { path: path() })
        } else {
            None
        }
    };
    if let Some(kind) = too_large(meta.len()) {
        return Err(kind);
    }
    // The size was only a claim (files in /proc report 0; a file may grow): read one byte
    // more than allowed at most, to tell.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    opened.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if let Some(kind) = too_large(size) {
        return Err(kind);
    }
    *budget -= size;
    Ok(decode(bytes))
}

/// Bytes as text: a leading byte order mark dropped, UTF-8 checked.
pub fn decode(mut bytes: Vec<u8>) -> Text {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Text::Utf8(text),
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let byte = bytes.get(offset).copied().unwrap_or_default();
            Text::NotUtf8 { text: String::from_utf8_lossy(&bytes).into_owned(), offset, byte }
        }
    }
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        kind => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover_all(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Kind>, Vec<Warning>) {
        let mut problems = Problems::default();
        let warnings = std::cell::RefCell::new(Vec::new());
        let files = discover(paths, &mut problems, &|w| warnings.borrow_mut().push(w.clone()));
        (files.into_iter().map(|f| f.path).collect(), problems.kinds(), warnings.into_inner())
    }

    #[test]
    fn directories_are_searched_recursively_for_yaml_files_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("b")).unwrap();
        for name in ["b/z.yml", "a.yaml", "notes.txt", "b/a.yaml"] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        let (files, problems, _) = discover_all(&[dir.path().to_path_buf(), dir.path().join("a.yaml")]);
        let names: Vec<_> = files.iter().map(|f| f.strip_prefix(dir.path()).unwrap().to_path_buf()).collect();
        assert_eq!(names, [PathBuf::from("a.yaml"), "b/a.yaml".into(), "b/z.yml".into()]);
        assert!(problems.is_empty());
    }

    #[test]
    fn a_missing_path_is_a_problem_naming_it() {
        let (files, problems, _) = discover_all(&[PathBuf::from("no/such/dir")]);
        assert!(files.is_empty());
        assert_eq!(problems[0].message(), "cannot read `no/such/dir`: no such file or directory");
    }

    #[cfg(unix)]
    #[test]
    fn links_are_followed_inside_the_paths_given_and_refused_outside() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let (m, outside) = (dir.path().join("m"), dir.path().join("outside"));
        fs::create_dir_all(m.join("sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(m.join("sub/real.yaml"), "").unwrap();
        fs::write(outside.join("secret.yaml"), "").unwrap();
        symlink(m.join("sub/real.yaml"), m.join("in.yaml")).unwrap();
        symlink("sub", m.join("again")).unwrap();
        symlink(".", m.join("loop")).unwrap();
        symlink(outside.join("secret.yaml"), m.join("out.yaml")).unwrap();
        symlink(&outside, m.join("outdir")).unwrap();
        symlink(outside.join("secret.yaml"), m.join("README")).unwrap();
        symlink(m.join("nowhere"), m.join("dangling.yaml")).unwrap();
        let (files, problems, _) = discover_all(std::slice::from_ref(&m));
        let names: Vec<_> = files.iter().map(|f| f.strip_prefix(&m).unwrap().to_path_buf()).collect();
        // Each file once, under its real path.
        assert_eq!(names, [PathBuf::from("sub/real.yaml")]);
        assert_eq!(
            problems,
            [
                Kind::BrokenLink { link: m.join("dangling.yaml") },
                Kind::LinkOutside { link: m.join("out.yaml") },
                Kind::LinkOutside { link: m.join("outdir") },
            ]
        );
        // A directory holding nothing but a link outside: the link is the one problem.
        let only = dir.path().join("only");
        fs::create_dir(&only).unwrap();
        symlink(outside.join("secret.yaml"), only.join("x.yaml")).unwrap();
        let (_, problems, _) = discover_all(std::slice::from_ref(&only));
        assert_eq!(problems, [Kind::LinkOutside { link: only.join("x.yaml") }]);
        // The outside directory given too: its links are followed, to files read anyway.
        let (files, problems, _) = discover_all(&[m.clone(), outside.clone()]);
        assert_eq!(files, [m.join("sub/real.yaml"), outside.join("secret.yaml")]);
        assert_eq!(problems, [Kind::BrokenLink { link: m.join("dangling.yaml") }]);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_named_directly_stands_for_itself_not_its_target() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("real.yaml"), "").unwrap();
        symlink(dir.path().join("real.yaml"), dir.path().join("link.yaml")).unwrap();
        symlink(dir.path(), dir.path().join("dirlink")).unwrap();
        let link = dir.path().join("link.yaml");
        let (files, problems, _) = discover_all(std::slice::from_ref(&link));
        assert!(files.is_empty());
        assert_eq!(problems, [Kind::LinkOutside { link: link.clone() }]);
        // With a trailing separator too, which would otherwise resolve the link.
        let dirlink = PathBuf::from(format!("{}/", dir.path().join("dirlink").display()));
        let (_, problems, _) = discover_all(&[dirlink]);
        assert_eq!(problems, [Kind::LinkOutside { link: dir.path().join("dirlink") }]);
        // Named together with the file it points to, the link is inside the paths given; the
        // file is read once.
        let (files, problems, _) = discover_all(&[link, dir.path().join("real.yaml")]);
        assert_eq!(files, [dir.path().join("real.yaml")]);
        assert!(problems.is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_when_named_and_skipped_with_a_warning_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        fs::write(dir.path().join("a.yaml"), "").unwrap();
        let (files, problems, warnings) = discover_all(&[dir.path().to_path_buf()]);
        assert_eq!(files, [dir.path().join("a.yaml")]);
        assert!(problems.is_empty());
        assert_eq!(warnings, [Warning { path: fifo.clone(), what: "a FIFO" }]);
        assert_eq!(
            warnings[0].to_string(),
            format!("skipped `{}`: it is a FIFO, not a regular file", fifo.display())
        );
        let (files, problems, _) = discover_all(&[fifo.clone(), PathBuf::from("/dev/zero")]);
        assert!(files.is_empty());
        assert_eq!(
            problems,
            [
                Kind::NotAFile { path: fifo, what: "a FIFO" },
                Kind::NotAFile { path: "/dev/zero".into(), what: "a character device" },
            ]
        );
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_the_total_is_capped_too() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        let file = fs::File::create(&big).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let manifest = Manifest { path: big.clone(), open: big.clone() };
        assert_eq!(read(&manifest, &mut u64::MAX.clone()), Err(Kind::TooLarge { path: big.clone() }));
        file.set_len(10).unwrap();
        let mut budget = 15;
        assert!(read(&manifest, &mut budget).is_ok());
        assert_eq!(budget, 5);
        assert_eq!(read(&manifest, &mut budget), Err(Kind::TooLargeInTotal { path: big }));
    }

    #[test]
    fn a_byte_order_mark_is_dropped_and_bad_utf8_is_located() {
        assert_eq!(decode(b"\xEF\xBB\xBFa: 1".to_vec()), Text::Utf8("a: 1".into()));
        assert_eq!(
            decode(b"\xEF\xBB\xBFa: \xff\xfe".to_vec()),
            Text::NotUtf8 { text: "a: \u{fffd}\u{fffd}".into(), offset: 3, byte: 0xff }
        );
    }
}
