//! A local directory as S3: bucket `b`, key `k` is the file `ROOT/b/k`.
//!
//! Listing walks the tree in exact S3 key order (UTF-8 byte order, where a directory sorts as its name plus
//! `/`), and keeps a bounded number of candidates per directory level in memory, however many files a directory
//! holds: memory stays flat with the number of objects. One walk reads up to [`LOOKAHEAD_PAGES`] pages and
//! keeps the pages after the first for the next call, so a flat folder of N files is scanned N / 10,000 times
//! rather than N / 1,000. (Like an S3 listing, a listing is not a snapshot: objects written meanwhile may be
//! missed.) Writes go to a temporary file beside the buckets and are renamed into place, so a reader or a
//! listing never sees a half-written object.

use std::collections::{BinaryHeap, VecDeque};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::ports::object_store::MAX_KEYS_PER_PAGE;
use crate::ports::{ListPage, ObjectMeta, ObjectReader, ObjectStore, StoreError};
use crate::spec::MAX_KEY_BYTES;

/// Holds in-progress writes; never a bucket, since bucket names cannot start with '.'.
const TMP_DIR: &str = ".dmap-tmp";

/// Pages one directory walk reads ahead.
pub const LOOKAHEAD_PAGES: usize = 10;

/// Pages read ahead by the last walk, served to the call that continues from `after`.
#[derive(Debug)]
struct Lookahead {
    bucket: String,
    prefix: String,
    after: String,
    objects: VecDeque<ObjectMeta>,
    /// The walk reached the end of the listing: nothing follows `objects`.
    complete: bool,
}

/// The embedded object store.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
    lookahead: Arc<Mutex<Option<Lookahead>>>,
}

impl LocalDirStore {
    /// A store over `root`, which must exist: each directory in it is a bucket.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            lookahead: Arc::default(),
        }
    }

    /// Serves a page from the look-ahead if the last walk read past `after` for this listing.
    fn page_from_lookahead(&self, bucket: &str, prefix: &str, after: &str) -> Option<ListPage> {
        let mut slot = self.lookahead.lock().unwrap_or_else(|p| p.into_inner());
        let ahead = slot.take()?;
        let hit = ahead.bucket == bucket && ahead.prefix == prefix && ahead.after == after;
        if !hit || (ahead.objects.len() <= MAX_KEYS_PER_PAGE && !ahead.complete) {
            return None;
        }
        Some(Self::cut_page(
            &mut slot,
            ahead.bucket,
            ahead.prefix,
            ahead.objects,
            ahead.complete,
        ))
    }

    /// Returns the first page of `objects` and keeps the rest (if any) as the look-ahead.
    fn cut_page(
        slot: &mut Option<Lookahead>,
        bucket: String,
        prefix: String,
        mut objects: VecDeque<ObjectMeta>,
        complete: bool,
    ) -> ListPage {
        if objects.len() <= MAX_KEYS_PER_PAGE && complete {
            return ListPage {
                objects: objects.into(),
                next: None,
            };
        }
        let rest = objects.split_off(MAX_KEYS_PER_PAGE.min(objects.len()));
        let after = objects.back().map(|o| o.key.clone()).unwrap_or_default();
        *slot = Some(Lookahead {
            bucket,
            prefix,
            after: after.clone(),
            objects: rest,
            complete,
        });
        ListPage {
            objects: objects.into(),
            next: Some(after),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a bucket (a directory under the root) if it does not exist.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        fs::create_dir_all(self.root.join(checked_bucket(bucket)?))?;
        Ok(())
    }

    fn bucket_dir(&self, bucket: &str) -> Result<PathBuf, StoreError> {
        let dir = self.root.join(checked_bucket(bucket)?);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(StoreError::NoSuchBucket {
                bucket: bucket.to_owned(),
            })
        }
    }
}

fn checked_bucket(bucket: &str) -> Result<&str, StoreError> {
    if bucket.is_empty() || bucket.starts_with('.') || bucket.contains(['/', '\\', '\0']) {
        return Err(StoreError::NoSuchBucket {
            bucket: bucket.to_owned(),
        });
    }
    Ok(bucket)
}

/// The file that holds `key`, refusing keys a directory tree cannot represent.
fn key_path(bucket_dir: &Path, key: &str) -> Result<PathBuf, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidKey {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(invalid("a key is 1 to 1,024 bytes"));
    }
    if key.contains('\0') {
        return Err(invalid("a NUL character cannot be stored in a file name"));
    }
    let mut path = bucket_dir.to_path_buf();
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(invalid(
                "a local directory cannot store keys with empty, '.' or '..' segments",
            ));
        }
        path.push(segment);
    }
    Ok(path)
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other(Box::new(e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(other)?
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        let dir = self.bucket_dir(bucket)?;
        // The continuation token is the last key of the previous page.
        let after = continuation.or(start_after);
        if let Some(page) = after.and_then(|a| self.page_from_lookahead(bucket, prefix, a)) {
            return Ok(page);
        }
        let (bucket, prefix, after) = (
            bucket.to_owned(),
            prefix.to_owned(),
            after.map(str::to_owned),
        );
        let lookahead = self.lookahead.clone();
        blocking(move || {
            let limit = MAX_KEYS_PER_PAGE * LOOKAHEAD_PAGES;
            let mut walk = Walk {
                prefix: &prefix,
                after: after.as_deref(),
                limit: limit + 1,
                out: Vec::new(),
            };
            walk.dir(&dir, "")?;
            let complete = walk.out.len() <= limit;
            let mut objects = VecDeque::from(walk.out);
            if !complete {
                objects.pop_back(); // only there to tell whether more follow
            }
            let mut slot = lookahead.lock().unwrap_or_else(|p| p.into_inner());
            Ok(Self::cut_page(&mut slot, bucket, prefix, objects, complete))
        })
        .await
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<ObjectReader, StoreError> {
        let path = key_path(&self.bucket_dir(bucket)?, key)?;
        match fs::File::open(&path) {
            Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => Ok(Box::new(file)),
            Ok(_) => Err(not_found(bucket, key)),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Err(not_found(bucket, key))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let path = key_path(&self.bucket_dir(bucket)?, key)?;
        let tmp_dir = self.root.join(TMP_DIR);
        let key = key.to_owned();
        blocking(move || {
            let parent = path.parent().expect("a key path is inside its bucket");
            fs::create_dir_all(parent).map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists | ErrorKind::NotADirectory => StoreError::InvalidKey {
                    key: key.clone(),
                    reason: "a parent of this key is an object".into(),
                },
                _ => e.into(),
            })?;
            if path.is_dir() {
                return Err(StoreError::InvalidKey {
                    key,
                    reason: "other keys already use this key as a folder".into(),
                });
            }
            fs::create_dir_all(&tmp_dir)?;
            let tmp = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
            fs::write(&tmp, &body)?;
            fs::rename(&tmp, &path).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })?;
            Ok(())
        })
        .await
    }
}

fn not_found(bucket: &str, key: &str) -> StoreError {
    StoreError::NotFound {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    }
}

/// One page of a sorted walk.
struct Walk<'a> {
    prefix: &'a str,
    after: Option<&'a str>,
    limit: usize,
    out: Vec<ObjectMeta>,
}

impl Walk<'_> {
    /// Appends, in key order, the keys under `dir` (whose own key prefix is `dir_key`) that the page needs.
    /// Each pass over the directory keeps only the smallest `room` eligible entries (a bounded heap), and
    /// passes again after the last one taken when empty folders left the page short.
    fn dir(&mut self, dir: &Path, dir_key: &str) -> Result<(), StoreError> {
        let mut lower: Option<String> = None;
        loop {
            let room = self.limit - self.out.len();
            if room == 0 {
                return Ok(());
            }
            let mut heap: BinaryHeap<(String, bool)> = BinaryHeap::with_capacity(room + 1);
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    return Err(StoreError::InvalidKey {
                        key: entry.path().display().to_string(),
                        reason: "file name is not UTF-8, so it is not an S3 key".into(),
                    });
                };
                let is_dir = entry.file_type()?.is_dir()
                    || (entry.file_type()?.is_symlink() && entry.path().is_dir());
                let key = if is_dir {
                    format!("{dir_key}{name}/")
                } else {
                    format!("{dir_key}{name}")
                };
                if !self.eligible(&key, is_dir) || lower.as_ref().is_some_and(|l| key <= *l) {
                    continue;
                }
                if heap.len() == room {
                    if heap.peek().is_some_and(|(max, _)| key < *max) {
                        heap.pop();
                    } else {
                        continue;
                    }
                }
                heap.push((key, is_dir));
            }
            let selected = heap.into_sorted_vec();
            let exhausted = selected.len() < room;
            for (key, is_dir) in &selected {
                let path = dir.join(key[dir_key.len()..].trim_end_matches('/'));
                if *is_dir {
                    self.dir(&path, key)?;
                } else {
                    let size = fs::metadata(&path).map(|m| m.len())?;
                    self.out.push(ObjectMeta {
                        key: key.clone(),
                        size,
                    });
                }
                if self.out.len() == self.limit {
                    return Ok(());
                }
            }
            if exhausted {
                return Ok(());
            }
            lower = selected.last().map(|(k, _)| k.clone());
        }
    }

    /// A file is listed when its key has the prefix and comes after `after`; a folder is entered when some key
    /// inside it could be.
    fn eligible(&self, key: &str, is_dir: bool) -> bool {
        if is_dir {
            (key.starts_with(self.prefix) || self.prefix.starts_with(key))
                && self.after.is_none_or(|a| key > a || a.starts_with(key))
        } else {
            key.starts_with(self.prefix) && self.after.is_none_or(|a| key > a)
        }
    }
}
