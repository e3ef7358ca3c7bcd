//! Finding manifest files and reading them: the loader's only file-system access.
//!
//! A path given as a file is read whatever its extension; a directory is searched
//! recursively for `*.yaml` / `*.yml` (symlinked directories are not followed, so a link
//! loop cannot hang the walk). The result is sorted and free of duplicates.

use std::path::{Path, PathBuf};

use super::problem::{Kind, Problem, Problems};

/// Every manifest file under `paths`, sorted; problems for paths that cannot be read.
pub fn discover(paths: &[PathBuf], problems: &mut Problems) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Err(e) => {
                problems
                    .push(Problem::unlocated(Kind::Unreadable { path: path.clone(), reason: reason(&e) }));
            }
            Ok(meta) if meta.is_dir() => {
                let before = files.len();
                walk(path, &mut files, problems);
                if files.len() == before {
                    problems.push(Problem::unlocated(Kind::NoManifests { path: path.clone() }));
                }
            }
            Ok(_) => files.push(path.clone()),
        }
    }
    files.sort();
    files.dedup();
    files
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, problems: &mut Problems) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems
                .push(Problem::unlocated(Kind::Unreadable { path: dir.to_path_buf(), reason: reason(&e) }));
            return;
        }
    };
    let mut paths: Vec<(PathBuf, bool)> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            (entry.path(), is_dir)
        })
        .collect();
    paths.sort();
    for (path, is_dir) in paths {
        if is_dir {
            walk(&path, files, problems);
        } else if is_manifest_name(&path) && path.is_file() {
            files.push(path);
        }
    }
}

fn is_manifest_name(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml")
}

/// The text of a manifest file, or why it cannot be read.
pub fn read(path: &Path) -> Result<String, Kind> {
    let bytes =
        std::fs::read(path).map_err(|e| Kind::Unreadable { path: path.to_path_buf(), reason: reason(&e) })?;
    String::from_utf8(bytes)
        .map_err(|_| Kind::Unreadable { path: path.to_path_buf(), reason: "it is not UTF-8 text".into() })
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

    #[test]
    fn directories_are_searched_recursively_for_yaml_files_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        for name in ["b/z.yml", "a.yaml", "notes.txt", "b/a.yaml"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let mut problems = Problems::default();
        let files = discover(&[dir.path().to_path_buf(), dir.path().join("a.yaml")], &mut problems);
        let names: Vec<_> = files.iter().map(|f| f.strip_prefix(dir.path()).unwrap().to_path_buf()).collect();
        assert_eq!(names, [PathBuf::from("a.yaml"), "b/a.yaml".into(), "b/z.yml".into()]);
        assert!(problems.is_empty());
    }

    #[test]
    fn a_missing_path_is_a_problem_naming_it() {
        let mut problems = Problems::default();
        let files = discover(&[PathBuf::from("no/such/dir")], &mut problems);
        assert!(files.is_empty());
        assert_eq!(problems.kinds()[0].message(), "cannot read `no/such/dir`: no such file or directory");
    }
}
