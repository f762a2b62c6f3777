//! Output files (plans, pictures, suggested maps, the demo's files) written whole or not at
//! all: through a temporary file in the destination's directory that is renamed over it once
//! complete and on disk, so that a crash or a failed write never leaves half a plan. A write
//! that fails removes its temporary file.

use std::io::Write as _;
use std::path::Path;

/// Writes `text` to `path` atomically. The file gets the mode a plain create would give it
/// (0666 less the umask), not the temporary file's private 0600.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy());
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("plan.json");
        std::fs::write(&path, "old").unwrap();
        write(&path, "{\"new\": true}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"new\": true}\n");
        assert_eq!(names(d.path()), ["plan.json"]);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_the_old_file_as_it_was() {
        let d = tempfile::tempdir().unwrap();
        // A directory where the file should go: the rename into place fails.
        let path = d.path().join("plan.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "kept").unwrap();
        assert!(write(&path, "{}").is_err());
        assert_eq!(names(d.path()), ["plan.json"], "a temporary file was left");
        assert_eq!(
            std::fs::read_to_string(path.join("inside")).unwrap(),
            "kept"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_file_gets_the_mode_of_a_plain_create() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let path = d.path().join("plan.json");
        write(&path, "{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&plain));
    }

    #[test]
    fn a_bare_file_name_is_written_in_the_working_directory() {
        // `-o plan.json`: its parent is "", which is the current directory.
        let name = format!("reshard-atomic-test-{}.json", std::process::id());
        let path = Path::new(&name);
        write(path, "{}").unwrap();
        let text = std::fs::read_to_string(path);
        std::fs::remove_file(path).unwrap();
        assert_eq!(text.unwrap(), "{}");
    }
}
