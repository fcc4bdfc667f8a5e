//! `domalloc topo --fsroot PATH`: another machine's sysfs tree, as `hwloc-gather-topology NAME`
//! saves it. That tool writes `NAME.tar.bz2` holding `NAME/sys/...` and `NAME/proc/...`; PATH is
//! that tarball (or the plain `.tar` bunzip2 leaves), or a directory holding `sys/` and `proc/`
//! (the tarball already unpacked). A tarball is unpacked into a temporary folder that lives as
//! long as the [`SavedTree`] and is removed with it.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::Failure;

/// A saved tree, ready to read: `root` holds `sys/` (and `proc/` when hwloc saved it).
#[derive(Debug)]
pub struct SavedTree {
    root: PathBuf,
    sys: PathBuf,
    /// The temporary folder a tarball was unpacked into (removed on drop).
    unpacked: Option<PathBuf>,
}

impl SavedTree {
    /// Opens `path` (a directory or a tarball); every error is one line naming `path`.
    pub fn open(path: &Path) -> Result<SavedTree, Failure> {
        let shown = path.display();
        if path.is_dir() {
            let sys = check_fsroot(path, path)?;
            return Ok(SavedTree { root: path.to_path_buf(), sys, unpacked: None });
        }
        if !path.exists() {
            return Err(format!("topo: --fsroot {shown}: no such file or directory"));
        }
        let temp = unpack(path)?;
        let mut tree = SavedTree { root: temp.clone(), sys: PathBuf::new(), unpacked: Some(temp) };
        tree.root = top_folder(&tree.root);
        tree.sys = check_fsroot(&tree.root, path)?;
        Ok(tree)
    }

    /// The folder that holds `sys/` and `proc/` (what `HWLOC_FSROOT` names).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its `sys` folder (what `DOMALLOC_TOPOLOGY_ROOT` names).
    pub fn sys(&self) -> &Path {
        &self.sys
    }
}

impl Drop for SavedTree {
    fn drop(&mut self) {
        if let Some(dir) = &self.unpacked {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Checks that `dir` holds `sys/devices/system/cpu/possible` (the layout hwloc-gather-topology
/// saves) and returns its `sys` folder. `shown` is the path the user gave.
pub fn check_fsroot(dir: &Path, shown: &Path) -> Result<PathBuf, Failure> {
    let shown = shown.display();
    if !dir.is_dir() {
        return Err(format!("topo: --fsroot {shown}: no such directory"));
    }
    let sys = dir.join("sys");
    if sys.join("devices/system/cpu/possible").is_file() {
        return Ok(sys);
    }
    if dir.join("devices/system/cpu/possible").is_file() {
        return Err(format!(
            "topo: --fsroot {shown}: this is a sys directory itself; pass the directory that holds it (with sys/ and proc/)"
        ));
    }
    Err(format!("topo: --fsroot {shown}: not a sysfs tree (no sys/devices/system/cpu/possible below it)"))
}

/// Unpacks the tarball at `path` (bzip2-compressed or plain) into a new temporary folder.
fn unpack(path: &Path) -> Result<PathBuf, Failure> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| format!("topo: --fsroot {shown}: {e}"))?;
    let mut head = [0u8; 262];
    let n = read_up_to(&mut file, &mut head).map_err(|e| format!("topo: --fsroot {shown}: {e}"))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| format!("topo: --fsroot {shown}: {e}"))?;
    let reader: Box<dyn Read> = if head[..n].starts_with(b"BZh") {
        Box::new(bzip2::read::BzDecoder::new(BufReader::new(file)))
    } else if n >= 262 && &head[257..262] == b"ustar" {
        Box::new(BufReader::new(file))
    } else {
        return Err(format!(
            "topo: --fsroot {shown}: neither a directory nor a .tar.bz2 or .tar archive (as hwloc-gather-topology writes)"
        ));
    };
    let temp = temp_folder().map_err(|e| format!("topo: --fsroot {shown}: cannot make a temporary folder: {e}"))?;
    let mut archive = tar::Archive::new(reader);
    // Entries that would land outside `temp` (absolute or `..` paths) are refused by `unpack`.
    if let Err(e) = archive.unpack(&temp) {
        let _ = std::fs::remove_dir_all(&temp);
        return Err(format!("topo: --fsroot {shown}: cannot unpack: {e}"));
    }
    Ok(temp)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A new, empty folder under the system's temporary folder.
fn temp_folder() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let mut i = 0u32;
    loop {
        let dir = base.join(format!("domalloc-fsroot-{}-{i}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && i < 1000 => i += 1,
            Err(e) => return Err(e),
        }
    }
}

/// hwloc-gather-topology's tarball holds one folder (`NAME/`); a tarball of `sys/` and `proc/`
/// themselves has them at its top.
fn top_folder(dir: &Path) -> PathBuf {
    if dir.join("sys").is_dir() {
        return dir.to_path_buf();
    }
    let entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => return dir.to_path_buf(),
    };
    match entries.as_slice() {
        [only] if only.is_dir() => only.clone(),
        _ => dir.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsroot_must_be_a_sysfs_tree() {
        let base = std::env::temp_dir().join(format!("domalloc-topo-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        assert!(check_fsroot(&base, &base).unwrap_err().contains("no such directory"));
        std::fs::create_dir_all(base.join("sys/devices/system/cpu")).unwrap();
        assert!(check_fsroot(&base, &base).unwrap_err().contains("not a sysfs tree"));
        std::fs::write(base.join("sys/devices/system/cpu/possible"), "0-1\n").unwrap();
        assert_eq!(check_fsroot(&base, &base).unwrap(), base.join("sys"));
        let sys = base.join("sys");
        assert!(check_fsroot(&sys, &sys).unwrap_err().contains("sys directory itself"));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_file_that_is_no_tarball_is_refused() {
        let f = std::env::temp_dir().join(format!("domalloc-fsroot-unit-{}.txt", std::process::id()));
        std::fs::write(&f, "not a tarball\n").unwrap();
        let e = SavedTree::open(&f).unwrap_err();
        assert!(e.contains("neither a directory nor a .tar.bz2 or .tar archive"), "{e}");
        assert!(SavedTree::open(&f.with_extension("missing")).unwrap_err().contains("no such file or directory"));
        std::fs::remove_file(&f).unwrap();
    }
}
