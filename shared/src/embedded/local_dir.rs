//! A local directory as S3: bucket `b`, key `k` is the file `ROOT/b/k`.
//!
//! Listing walks the tree in exact S3 key order (UTF-8 byte order, where a directory sorts as its name plus
//! `/`), and keeps a bounded number of candidates per directory level in memory, however many files a directory
//! holds: memory stays flat with the number of objects. A listing's first page is walked alone, since a job's
//! first batch waits for it; after that, walks read [`LOOKAHEAD_PAGES`] pages each, in the background while the
//! pages before them are served (a walk is always under way), so a flat folder of N files is scanned N / 10,000
//! times rather than N / 1,000, and the listing, a job's one sequential step, does not hold the workers up.
//! (Like an S3 listing, a listing is not a snapshot: objects written meanwhile may be missed.) Writes go to a
//! temporary file beside the buckets and are renamed into place, so a reader or a listing never sees a
//! half-written object.
//!
//! A data directory may hold more than plain files. A link is followed while it stays inside the data directory
//! (or the bucket's own directory, when the bucket is itself a link): one that leads out of it, to nothing, or
//! round in a loop is listed, and reading it is refused for good (`StoreError::Denied`), so the job records the
//! item as failed; a link to a folder that contains it is not entered (the listing would never end). FIFOs,
//! sockets and devices are not objects: they are left out of listings, with a warning, and never read. A read of
//! such a key opens it without waiting (`O_NONBLOCK`: opening a FIFO would otherwise wait for a writer) to learn
//! what it is from what was opened, then refuses it.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;

use crate::ports::object_store::MAX_KEYS_PER_PAGE;
use crate::ports::{Chunks, ListPage, ObjectMeta, ObjectReader, ObjectStore, StoreError};
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
    /// The walk reading on from the last of `objects`, started as soon as the one before it was taken in, so
    /// that the listing's reader does not wait for it.
    next: Option<BackgroundWalk>,
}

impl Lookahead {
    /// The key the walk after `objects` starts after.
    fn last_key(&self) -> String {
        self.objects.back().map_or(&self.after, |o| &o.key).clone()
    }
}

/// A walk under way in the background. Dropped unawaited (its look-ahead replaced by another listing's, or
/// the store dropped), it stops the walk: nobody will read what it finds.
#[derive(Debug)]
struct BackgroundWalk {
    walk: tokio::task::JoinHandle<Result<Walked, StoreError>>,
    stop: Arc<AtomicBool>,
}

impl Drop for BackgroundWalk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What one walk read: up to its limit of objects, and whether the listing ends with them.
#[derive(Debug)]
struct Walked {
    objects: VecDeque<ObjectMeta>,
    complete: bool,
}

/// One walk to start: the keys of `bucket` under `prefix` after `after` (from the start when empty).
struct PageWalk {
    store: LocalDirStore,
    bucket: String,
    bucket_dir: PathBuf,
    prefix: String,
    after: String,
    /// Set when nobody will read what the walk finds: it stops at its next folder entry.
    stop: Arc<AtomicBool>,
}

impl PageWalk {
    /// Walks for up to `pages` pages, off the async runtime.
    async fn run(self, pages: usize) -> Result<Walked, StoreError> {
        blocking(move || {
            let limit = MAX_KEYS_PER_PAGE * pages;
            let bounds = self.store.bounds_of(&self.bucket, &self.bucket_dir)?;
            let dir = bounds.bucket.clone();
            let mut walk = Walk {
                prefix: &self.prefix,
                after: Some(self.after.as_str()).filter(|a| !a.is_empty()),
                limit: limit + 1,
                out: Vec::new(),
                bounds: &bounds,
                folders: vec![dir.clone()],
                stop: &self.stop,
            };
            walk.dir(&dir, "")?;
            let complete = walk.out.len() <= limit;
            let mut objects = VecDeque::from(walk.out);
            if !complete {
                objects.pop_back(); // only there to tell whether more follow
            }
            Ok(Walked { objects, complete })
        })
        .await
    }
}

/// The embedded object store.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
    lookahead: Arc<Mutex<Option<Lookahead>>>,
    /// Each bucket's [`Bounds`], canonicalized once rather than for every object read.
    bounds: Arc<Mutex<HashMap<String, Arc<Bounds>>>>,
}

impl LocalDirStore {
    /// A store over `root`, which must exist: each directory in it is a bucket.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            lookahead: Arc::default(),
            bounds: Arc::default(),
        }
    }

    /// Takes the look-ahead when it continues this listing from `after`.
    fn take_lookahead(&self, bucket: &str, prefix: &str, after: &str) -> Option<Lookahead> {
        let mut slot = self.lookahead.lock().unwrap_or_else(|p| p.into_inner());
        let ahead = slot.as_ref()?;
        let hit = ahead.bucket == bucket && ahead.prefix == prefix && ahead.after == after;
        if hit { slot.take() } else { None }
    }

    /// Serves the next page of `ahead` (waiting for the walk reading on when it holds less than one), keeps
    /// the rest as the look-ahead, and starts the next walk if none is under way.
    async fn serve(
        &self,
        mut ahead: Lookahead,
        bucket_dir: PathBuf,
    ) -> Result<ListPage, StoreError> {
        if ahead.objects.len() < MAX_KEYS_PER_PAGE && !ahead.complete {
            let walked = match ahead.next.take() {
                Some(mut next) => (&mut next.walk).await.map_err(other)??,
                None => {
                    let from = ahead.last_key();
                    let walk = self.walk(&ahead.bucket, bucket_dir.clone(), &ahead.prefix, from);
                    walk.run(LOOKAHEAD_PAGES).await?
                }
            };
            ahead.objects.extend(walked.objects);
            ahead.complete = walked.complete;
        }
        if ahead.objects.len() <= MAX_KEYS_PER_PAGE && ahead.complete {
            return Ok(ListPage {
                objects: ahead.objects.into(),
                next: None,
            });
        }
        let rest = ahead.objects.split_off(MAX_KEYS_PER_PAGE);
        let page = std::mem::replace(&mut ahead.objects, rest);
        ahead.after = page.back().map(|o| o.key.clone()).unwrap_or_default();
        if !ahead.complete && ahead.next.is_none() {
            let walk = self.walk(&ahead.bucket, bucket_dir, &ahead.prefix, ahead.last_key());
            let stop = walk.stop.clone();
            ahead.next = Some(BackgroundWalk {
                walk: tokio::spawn(walk.run(LOOKAHEAD_PAGES)),
                stop,
            });
        }
        let next = Some(ahead.after.clone());
        *self.lookahead.lock().unwrap_or_else(|p| p.into_inner()) = Some(ahead);
        Ok(ListPage {
            objects: page.into(),
            next,
        })
    }

    /// A walk of `bucket` (whose directory is `bucket_dir`) for the keys under `prefix` after `after`.
    fn walk(&self, bucket: &str, bucket_dir: PathBuf, prefix: &str, after: String) -> PageWalk {
        PageWalk {
            store: self.clone(),
            bucket: bucket.to_owned(),
            bucket_dir,
            prefix: prefix.to_owned(),
            after,
            stop: Arc::default(),
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

    /// `bucket`'s bounds (blocking: the first time, it canonicalizes two paths).
    fn bounds_of(&self, bucket: &str, bucket_dir: &Path) -> Result<Arc<Bounds>, StoreError> {
        if let Some(bounds) = self
            .bounds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(bucket)
        {
            return Ok(bounds.clone());
        }
        let bounds = Arc::new(Bounds::new(&self.root, bucket_dir)?);
        self.bounds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bucket.to_owned(), bounds.clone());
        Ok(bounds)
    }

    /// The first `limit` bytes of an object, read on the calling thread (which may block).
    fn read_blocking(
        &self,
        bucket: &str,
        bucket_dir: &Path,
        key: &str,
        limit: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let (file, size) = self.open_blocking(bucket, bucket_dir, key)?;
        read_file(file, size, limit)
    }

    /// Opens object `key` of `bucket` (whose directory is `bucket_dir`) on the calling thread; returns it with
    /// its size.
    fn open_blocking(
        &self,
        bucket: &str,
        bucket_dir: &Path,
        key: &str,
    ) -> Result<(fs::File, u64), StoreError> {
        let path = key_path(bucket_dir, key)?;
        let bounds = self.bounds_of(bucket, bucket_dir)?;
        open_object(&bounds, &path, bucket, key)
    }

    /// A whole object if it is at most `limit` bytes (`None` if it is larger), read on the calling thread.
    fn read_small_blocking(
        &self,
        bucket: &str,
        bucket_dir: &Path,
        key: &str,
        limit: u64,
    ) -> Option<Result<Vec<u8>, StoreError>> {
        match self.open_blocking(bucket, bucket_dir, key) {
            Ok((_, size)) if size > limit => None,
            Ok((file, size)) => Some(read_file(file, size, limit)),
            Err(e) => Some(Err(e)),
        }
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

/// Where the objects of one bucket may really be: in the data directory, or in the bucket's own directory when
/// the bucket is a link to elsewhere (put there on purpose, unlike a link inside the data).
#[derive(Debug)]
struct Bounds {
    root: PathBuf,
    bucket: PathBuf,
    /// The bucket's directory, open: objects are opened relative to it ([`open_beneath`]).
    dir: Option<fs::File>,
}

impl Bounds {
    fn new(root: &Path, bucket_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            root: fs::canonicalize(root)?,
            bucket: fs::canonicalize(bucket_dir)?,
            dir: fs::File::open(bucket_dir).ok(),
        })
    }

    /// `real` is a canonical path.
    fn contain(&self, real: &Path) -> bool {
        real.starts_with(&self.root) || real.starts_with(&self.bucket)
    }
}

/// Opens the object at `path` (the file of `bucket`/`key`) if it is a regular file within `bounds`; returns it
/// with its size.
fn open_object(
    bounds: &Bounds,
    path: &Path,
    bucket: &str,
    key: &str,
) -> Result<(fs::File, u64), StoreError> {
    let refused = |code: &str, message: &str| StoreError::Denied {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        code: code.to_owned(),
        message: message.to_owned(),
    };
    if let Some(opened) = open_beneath(bounds, key).or_else(|| open_fast(bounds, path)) {
        return Ok(opened);
    }
    let real = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) => {
            return Err(match fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => refused(
                    "BrokenLink",
                    "a symbolic link that leads nowhere (its target is missing, or links loop)",
                ),
                _ if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    not_found(bucket, key)
                }
                _ => e.into(),
            });
        }
    };
    if !bounds.contain(&real) {
        return Err(refused(
            "LinkOutOfDataDir",
            "a symbolic link to a file outside the data directory, which is not read",
        ));
    }
    let special = || refused("NotAFile", "a FIFO, socket or device, not a regular file");
    match fs::metadata(&real) {
        Ok(m) if m.is_dir() => return Err(not_found(bucket, key)),
        Ok(m) if !m.is_file() => return Err(special()),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found(bucket, key)),
        Err(e) => return Err(e.into()),
    }
    let mut options = fs::OpenOptions::new();
    options.read(true);
    // Opening a FIFO waits for a writer: never wait, even for one swapped in since the check above (reads of a
    // regular file ignore the flag).
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = match options.open(&real) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found(bucket, key)),
        Err(e) => return Err(e.into()),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(special());
    }
    Ok((file, metadata.len()))
}

/// Opens a regular file whose real path is within `bounds` in three system calls (open, the real path of what was
/// opened, its metadata), where canonicalizing first costs one per path component. `None` for anything else (a
/// link out of bounds, a broken one, a folder, a FIFO, an error): the careful path decides, and words the error.
/// Checking what was opened, rather than the path before opening it, also leaves no moment for a link to be
/// swapped in between.
#[cfg(target_os = "linux")]
fn open_fast(bounds: &Bounds, path: &Path) -> Option<(fs::File, u64)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let real = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    let metadata = file.metadata().ok()?;
    (bounds.contain(&real) && metadata.is_file()).then_some((file, metadata.len()))
}

#[cfg(not(target_os = "linux"))]
fn open_fast(_bounds: &Bounds, _path: &Path) -> Option<(fs::File, u64)> {
    None
}

/// Opens `key` relative to the bucket's open directory, refusing any link on the way (`openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, Linux 5.6 and later): a file reached so is within the bounds with
/// no further check, and the lookup walks the key alone, not the whole path. `None` for a path with a link in
/// it, anything not a regular file, an error, or a kernel without the call: [`open_fast`] and the careful path
/// decide.
#[cfg(target_os = "linux")]
fn open_beneath(bounds: &Bounds, key: &str) -> Option<(fs::File, u64)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let dir = bounds.dir.as_ref()?;
    let key = std::ffi::CString::new(key).ok()?;
    // SAFETY: open_how is plain data, all zeroes a valid (empty) request before the fields set here.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: the pointers are valid for the call; the kernel reads `how` up to the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            key.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor the call just opened, owned by nothing else.
    let file = unsafe { fs::File::from_raw_fd(fd as i32) };
    let metadata = file.metadata().ok()?;
    metadata.is_file().then_some((file, metadata.len()))
}

#[cfg(not(target_os = "linux"))]
fn open_beneath(_bounds: &Bounds, _key: &str) -> Option<(fs::File, u64)> {
    None
}

/// The first `limit` bytes of `file`, whose size was `size` when it was opened: read in one call when it still
/// is (a read to the end would take a second, to find it), else to its end.
fn read_file(mut file: fs::File, size: u64, limit: u64) -> Result<Vec<u8>, StoreError> {
    use std::io::{Read, Seek};
    let wanted = size.min(limit);
    let mut body = vec![0; wanted as usize];
    if file.read_exact(&mut body).is_ok() {
        return Ok(body);
    }
    // Shorter than it was (rewritten meanwhile): read what there is.
    body.clear();
    file.seek(std::io::SeekFrom::Start(0))?;
    file.take(limit).read_to_end(&mut body)?;
    Ok(body)
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
        if let Some(ahead) = after.and_then(|a| self.take_lookahead(bucket, prefix, a)) {
            return self.serve(ahead, dir).await;
        }
        // A listing's first page is walked alone: its reader waits for it.
        let pages = if continuation.is_some() {
            LOOKAHEAD_PAGES
        } else {
            1
        };
        let walked = self
            .walk(
                bucket,
                dir.clone(),
                prefix,
                after.unwrap_or_default().to_owned(),
            )
            .run(pages)
            .await?;
        let ahead = Lookahead {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            after: after.unwrap_or_default().to_owned(),
            objects: walked.objects,
            complete: walked.complete,
            next: None,
        };
        self.serve(ahead, dir).await
    }

    async fn get_from(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ObjectReader, StoreError> {
        let bucket_dir = self.bucket_dir(bucket)?;
        let (store, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
        blocking(move || {
            let (mut file, _) = store.open_blocking(&bucket, &bucket_dir, &key)?;
            if offset > 0 {
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
            }
            Ok(Box::new(file) as ObjectReader)
        })
        .await
    }

    /// Every read in one blocking step: open, and read whole the files of at most `limit` bytes.
    async fn read_small(
        &self,
        bucket: &str,
        keys: &[String],
        limit: u64,
    ) -> Vec<Option<Result<Vec<u8>, StoreError>>> {
        let Ok(bucket_dir) = self.bucket_dir(bucket) else {
            return keys.iter().map(|_| None).collect(); // each read apart says so
        };
        let count = keys.len();
        let (store, bucket, keys) = (self.clone(), bucket.to_owned(), keys.to_vec());
        let read = tokio::task::spawn_blocking(move || {
            keys.iter()
                .map(|key| store.read_small_blocking(&bucket, &bucket_dir, key, limit))
                .collect::<Vec<_>>()
        })
        .await;
        // The blocking task panicked or was cancelled: each object is read apart.
        read.unwrap_or_else(|_| (0..count).map(|_| None).collect())
    }

    /// Opens and reads in one blocking step, where the default takes two.
    async fn read_up_to(&self, bucket: &str, key: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
        let bucket_dir = self.bucket_dir(bucket)?;
        let (store, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
        blocking(move || store.read_blocking(&bucket, &bucket_dir, &key, limit)).await
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let (path, tmp) = self.write_paths(bucket, key)?;
        let key = key.to_owned();
        blocking(move || {
            let tmp = make_room(&path, &tmp, key)?;
            fs::write(&tmp, &body)?;
            replace(&tmp, &path)
        })
        .await
    }

    /// Chunk by chunk into a file of its own, renamed over the key once the last is in.
    async fn put_chunks(
        &self,
        bucket: &str,
        key: &str,
        mut chunks: Chunks<'_>,
    ) -> Result<(), StoreError> {
        let (path, tmp) = self.write_paths(bucket, key)?;
        let key = key.to_owned();
        let (tmp, path, file) = blocking(move || {
            let tmp = make_room(&path, &tmp, key)?;
            let file = fs::File::create(&tmp)?;
            Ok((tmp, path, file))
        })
        .await?;
        let mut file = Some(file);
        let written: Result<(), StoreError> = async {
            while let Some(chunk) = chunks.next().await {
                let (chunk, mut open) = (chunk?, file.take().expect("put back after each chunk"));
                file = Some(
                    blocking(move || {
                        std::io::Write::write_all(&mut open, &chunk)?;
                        Ok(open)
                    })
                    .await?,
                );
            }
            Ok(())
        }
        .await;
        drop(file);
        match written {
            Ok(()) => blocking(move || replace(&tmp, &path)).await,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

impl LocalDirStore {
    /// Where `key` goes, and the folder its write is staged in (renamed into place, so readers see whole
    /// objects).
    fn write_paths(&self, bucket: &str, key: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        Ok((
            key_path(&self.bucket_dir(bucket)?, key)?,
            self.root.join(TMP_DIR),
        ))
    }
}

/// Makes the folders `path` needs, refusing a key that is a folder or under an object; a fresh staging file
/// in `tmp_dir`.
fn make_room(path: &Path, tmp_dir: &Path, key: String) -> Result<PathBuf, StoreError> {
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
    fs::create_dir_all(tmp_dir)?;
    Ok(tmp_dir.join(uuid::Uuid::new_v4().simple().to_string()))
}

/// Renames the staged `tmp` over `path`, or removes it.
fn replace(tmp: &Path, path: &Path) -> Result<(), StoreError> {
    fs::rename(tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })?;
    Ok(())
}

fn not_found(bucket: &str, key: &str) -> StoreError {
    StoreError::NotFound {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    }
}

/// What a directory entry is to a listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    /// A folder to walk, at this real (canonical) path.
    Folder(PathBuf),
    /// A regular file in the folder being walked: its name is the last part of its key.
    File,
    /// A link to a regular file within the bounds, at this real path.
    Object(PathBuf),
    /// A link that cannot be read (it leads out of the bounds, to nothing, or round a loop): listed, so that
    /// the read of its key fails the item, as an object S3 lists and then refuses.
    Unreadable,
}

/// A file as a listed object. Its entity tag is made of its modification time and size, not of an MD5 of its
/// content as S3's (which would read every file to list it): it changes when the file is rewritten, which is
/// what an ETag is compared for.
fn object_meta(key: String, (len, modified): (u64, std::time::Duration)) -> ObjectMeta {
    ObjectMeta::new(
        key,
        len,
        format!("\"{:x}-{:x}\"", modified.as_nanos(), len),
        i64::try_from(modified.as_millis()).unwrap_or(i64::MAX),
    )
}

/// A file's size and modification time (since the epoch).
fn size_and_modified(m: &fs::Metadata) -> (u64, std::time::Duration) {
    let modified = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    (m.len(), modified)
}

/// Folder entries a thread stats when a walk spreads the stats of one folder's files over threads.
const STATS_PER_THREAD: usize = 256;

/// [`size_and_modified`] of each regular file ([`Entry::File`]) among `selected`, the entries of the folder
/// `dir` whose key prefix is `prefix_len` bytes long, in order. The stats are most of a walk's time, and the
/// listing is a job's one sequential step: a large folder's are spread over up to one thread per core.
fn stat_files(
    dir: &Path,
    prefix_len: usize,
    selected: &[(String, Entry)],
) -> Vec<std::io::Result<(u64, std::time::Duration)>> {
    #[cfg(target_os = "linux")]
    let open_dir = fs::File::open(dir).ok();
    #[cfg(not(target_os = "linux"))]
    let open_dir: Option<fs::File> = None;
    let files: Vec<&str> = selected
        .iter()
        .filter(|(_, kind)| matches!(kind, Entry::File))
        .map(|(key, _)| &key[prefix_len..])
        .collect();
    let stat_all = |names: &[&str]| -> Vec<_> {
        names
            .iter()
            .map(|name| stat_named(dir, name, open_dir.as_ref()))
            .collect()
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = (files.len() / STATS_PER_THREAD).clamp(1, cores);
    if threads == 1 {
        return stat_all(&files);
    }
    std::thread::scope(|scope| {
        let mut chunks = files.chunks(files.len().div_ceil(threads));
        let first = chunks.next().unwrap_or_default();
        // A thread that cannot start (a process limit) leaves its chunk to this one.
        let rest: Vec<_> = chunks
            .map(|chunk| {
                let thread =
                    std::thread::Builder::new().spawn_scoped(scope, move || stat_all(chunk));
                (chunk, thread.ok())
            })
            .collect();
        let mut stats = stat_all(first);
        for (chunk, thread) in rest {
            stats.extend(match thread {
                Some(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => stat_all(chunk),
            });
        }
        stats
    })
}

/// [`size_and_modified`] of the file `name` in the folder `dir`: through `open_dir` (that folder, open) where
/// there is one.
fn stat_named(
    dir: &Path,
    name: &str,
    open_dir: Option<&fs::File>,
) -> std::io::Result<(u64, std::time::Duration)> {
    #[cfg(target_os = "linux")]
    if let Some(open_dir) = open_dir {
        return stat_in(open_dir, name);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = open_dir;
    fs::metadata(dir.join(name)).map(|m| size_and_modified(&m))
}

/// [`size_and_modified`] of the file `name` in the open directory `dir`, where the lookup walks the name alone
/// rather than the whole path (a listing stats every file).
#[cfg(target_os = "linux")]
fn stat_in(dir: &fs::File, name: &str) -> std::io::Result<(u64, std::time::Duration)> {
    use std::os::fd::AsRawFd;
    let name = std::ffi::CString::new(name)?;
    // SAFETY: stat is plain data; fstatat fills it, and it is read only when the call succeeded.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let done = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if done != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let modified = std::time::Duration::new(
        u64::try_from(stat.st_mtime).unwrap_or(0),
        u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
    );
    Ok((u64::try_from(stat.st_size).unwrap_or(0), modified))
}

/// One page of a sorted walk.
struct Walk<'a> {
    prefix: &'a str,
    after: Option<&'a str>,
    limit: usize,
    out: Vec<ObjectMeta>,
    bounds: &'a Bounds,
    /// The real paths of the folders being walked, outermost first: a link to any of them (or to a folder
    /// holding one) is a loop.
    folders: Vec<PathBuf>,
    /// Set when nobody will read the walk's result ([`BackgroundWalk`]).
    stop: &'a AtomicBool,
}

impl Walk<'_> {
    /// Appends, in key order, the keys under `dir` (a real path, whose own key prefix is `dir_key`) that the
    /// page needs. Each pass over the directory keeps only the smallest `room` eligible entries (a bounded
    /// heap), and passes again after the last one taken when empty folders left the page short.
    fn dir(&mut self, dir: &Path, dir_key: &str) -> Result<(), StoreError> {
        let mut lower: Option<String> = None;
        loop {
            let room = self.limit - self.out.len();
            if room == 0 {
                return Ok(());
            }
            let mut heap: BinaryHeap<(String, Entry)> = BinaryHeap::with_capacity(room + 1);
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(StoreError::Other("the listing's walk was stopped".into()));
                }
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    return Err(StoreError::InvalidKey {
                        key: entry.path().display().to_string(),
                        reason: "file name is not UTF-8, so it is not an S3 key".into(),
                    });
                };
                let Some(kind) = self.classify(&entry, dir_key, &name)? else {
                    continue;
                };
                let is_dir = matches!(kind, Entry::Folder(_));
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
                heap.push((key, kind));
            }
            let selected = heap.into_sorted_vec();
            let exhausted = selected.len() < room;
            let last = selected.last().map(|(k, _)| k.clone());
            let mut files = stat_files(dir, dir_key.len(), &selected).into_iter();
            for (key, kind) in selected {
                let stat = match kind {
                    Entry::Folder(real) => {
                        self.folders.push(real.clone());
                        let walked = self.dir(&real, &key);
                        self.folders.pop();
                        walked?;
                        None
                    }
                    Entry::File => files.next(),
                    Entry::Object(real) => Some(fs::metadata(real).map(|m| size_and_modified(&m))),
                    Entry::Unreadable => Some(Ok((0, std::time::Duration::ZERO))),
                };
                match stat {
                    Some(Ok(stat)) => self.out.push(object_meta(key, stat)),
                    Some(Err(e)) if e.kind() == ErrorKind::NotFound => {} // removed meanwhile
                    Some(Err(e)) => return Err(e.into()),
                    None => {}
                }
                if self.out.len() == self.limit {
                    return Ok(());
                }
            }
            if exhausted {
                return Ok(());
            }
            lower = last;
        }
    }

    /// What `entry` of the folder whose key prefix is `dir_key` is; `None` for what a listing leaves out.
    fn classify(
        &self,
        entry: &fs::DirEntry,
        dir_key: &str,
        name: &str,
    ) -> Result<Option<Entry>, StoreError> {
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            return Ok(Some(Entry::Folder(entry.path())));
        }
        if file_type.is_file() {
            return Ok(Some(Entry::File));
        }
        let key = format!("{dir_key}{name}");
        let special = || {
            tracing::warn!(key, "not listed: a FIFO, socket or device is not an object");
            Ok(None)
        };
        if !file_type.is_symlink() {
            return special();
        }
        let Ok(real) = fs::canonicalize(entry.path()) else {
            return Ok(Some(Entry::Unreadable));
        };
        if !self.bounds.contain(&real) {
            return Ok(Some(Entry::Unreadable));
        }
        match fs::metadata(&real) {
            Ok(m) if m.is_dir() => {
                if self.folders.iter().any(|f| f.starts_with(&real)) {
                    tracing::warn!(key, "not listed: a link to a folder that holds it (a loop)");
                    return Ok(None);
                }
                Ok(Some(Entry::Folder(real)))
            }
            Ok(m) if m.is_file() => Ok(Some(Entry::Object(real))),
            Ok(_) => special(),
            Err(_) => Ok(Some(Entry::Unreadable)),
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
