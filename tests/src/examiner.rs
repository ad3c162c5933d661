//! What a phone examiner sees in a profile home without any passphrase.
//!
//! The examiner works on a copy (opening a sled database writes to it), reads every file's
//! name and size, then opens the copy with sled itself and reads the page table (the highest
//! page id ever allocated and the list of freed ids, which sled keeps in the clear and which
//! show where trees were made late or dropped: every tree's root page comes from them) and,
//! for every tree, its name's length, its entry count and the length of every value. Names
//! and values are keyed hashes and ciphertexts, so those lengths and counts and the layout
//! of pages are all there is to compare.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// What an examiner reads from a profile home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Every file below the home: relative path and size in bytes.
    pub files: BTreeMap<PathBuf, u64>,
    /// sled's page table as its own listing shows it: `max: N free: [...]`, the next page id
    /// to allocate and the freed ids waiting for reuse.
    pub pages: String,
    /// Every tree but sled's default, sorted.
    pub trees: Vec<TreeFindings>,
}

/// One sled tree as the examiner sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TreeFindings {
    /// The length of the tree's name.
    pub name_len: usize,
    /// How many entries it holds.
    pub entries: usize,
    /// The length of every value, sorted.
    pub value_lens: Vec<usize>,
}

impl Findings {
    /// The file list with every size rounded up to a power of two: the coarse size classes
    /// that an examiner may always tell apart (a used profile is bigger than a fresh one).
    /// sled names its snapshot after the log position (`snap.` and 16 hex digits: how many
    /// bytes were ever written), which is a size too and is rounded the same way.
    pub fn size_classes(&self) -> BTreeMap<PathBuf, u64> {
        self.files
            .iter()
            .map(|(p, s)| {
                let name = p.to_string_lossy();
                let p = match name.rsplit_once("snap.") {
                    Some((dir, lsn)) => match u64::from_str_radix(lsn, 16) {
                        Ok(lsn) => {
                            PathBuf::from(format!("{dir}snap.(about {})", lsn.next_power_of_two()))
                        }
                        Err(_) => p.clone(),
                    },
                    None => p.clone(),
                };
                (p, s.next_power_of_two())
            })
            .collect()
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn list_files(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, u64>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            list_files(root, &path, out)?;
        } else {
            out.insert(
                path.strip_prefix(root)?.to_path_buf(),
                entry.metadata()?.len(),
            );
        }
    }
    Ok(())
}

/// sled's page table from its own `Debug` listing of a tree, whose first lines read
/// `PageCache { max: N free: Mutex { data: [...] } }`.
fn page_table(tree: &sled::Tree) -> Result<String> {
    let listing = format!("{tree:?}");
    let start = listing
        .find("max:")
        .with_context(|| format!("no page table in sled's listing: {listing}"))?;
    let line = listing
        .get(start..)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_default();
    Ok(line.trim_end_matches(['}', ' ']).to_string())
}

/// Examines the profile home `home` (which no process may have open).
pub fn examine(home: &Path) -> Result<Findings> {
    let mut files = BTreeMap::new();
    list_files(home, home, &mut files)?;
    let image = tempfile::tempdir()?;
    copy_dir(home, image.path())?;
    let db = sled::open(image.path().join("db")).context("opening the copy with sled")?;
    let pages = page_table(&db)?;
    let mut trees = Vec::new();
    for name in db.tree_names() {
        if name.as_ref() == b"__sled__default" {
            continue;
        }
        let tree = db.open_tree(&name)?;
        let mut value_lens = Vec::new();
        for item in tree.iter() {
            value_lens.push(item?.1.len());
        }
        value_lens.sort_unstable();
        trees.push(TreeFindings {
            name_len: name.len(),
            entries: value_lens.len(),
            value_lens,
        });
    }
    trees.sort();
    Ok(Findings {
        files,
        pages,
        trees,
    })
}
