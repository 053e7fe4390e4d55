//! The embedded job store, with the job store port's conditional semantics (the ones the DynamoDB adapter gets
//! from condition expressions): every operation is one atomic step under a lock, so a marker here is counted
//! as it is written.
//!
//! In memory only ([`MemoryJobStore::new`], for tests), or persistent ([`MemoryJobStore::persistent`], for
//! `dmap run --data-dir`): each job then has a journal, `<dir>/<job_id>.jsonl`, one line per change in the
//! order the changes were made, so that its record, checkpoint, batch records and counters outlive the
//! process. A persistent store holds of each batch record only where its line is, and reads it back when
//! asked: memory stays small however many batches a job has. A run interrupted by Ctrl-C or a crash is resumed from it, and `dmap status` or `dmap ls` read it
//! from another process while the run goes on.
//!
//! - **One writer.** A process changes a job only while it holds an exclusive lock on its journal (taken at
//!   its first change, kept until the store is dropped), so two runs of one job cannot both count it. Readers
//!   take no lock.
//! - **A prefix is a state.** Each change is one `write` of one whole line, made as the change is applied, so
//!   the journal after a crash is the history up to some change, which is a state the pipeline already
//!   recovers from (a batch recorded but not yet in the journal is processed again: its message was lost with
//!   the process anyway). A line cut short by a crash is ignored, and cut off by the next writer. The journal
//!   is not synced to disk: it outlives the process, not the machine (a laptop's run, not a database).
//! - **Readers follow.** A store that does not write a job reads the lines appended since its last read
//!   whenever it is asked about the job, so a `status --watch` sees the run move.
//! - **Operators write to an inbox.** `dmap abort` and `dmap update` from another process cannot write the
//!   journal while a run holds it: they append their change to the job's inbox, `<dir>/<job_id>.control`.
//!   The writer reads the inbox whenever it is asked about the job and journals each change it takes, with
//!   how far into the inbox it has read, so a change is taken once, in order, and survives a crash.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::batches::{Batches, Found, Line, StoredBatch};
use crate::clock::now_ms;
use crate::outcome::TerminalStatus;
use crate::ports::{
    BatchRecord, Checkpoint, ControlChange, CreateOutcome, JobRecord, JobStatus, JobStore,
    JobStoreError, ListingTotals, LoggedPage, Progress, RecordOutcome, Recorded,
};
use crate::usage::Usage;

/// The file name suffix of a job's journal.
const JOURNAL_SUFFIX: &str = ".jsonl";
/// The file name suffix of a job's inbox of operators' changes.
const INBOX_SUFFIX: &str = ".control";

/// One change to a job, as its journal holds it. Applying the changes in order rebuilds the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
enum Change {
    Created {
        record: Box<JobRecord>,
    },
    /// The whole checkpoint as it stands after the change.
    Checkpoint {
        checkpoint: Checkpoint,
    },
    ListingComplete {
        totals: ListingTotals,
    },
    Batch {
        seq: u64,
        record: BatchRecord,
        #[serde(default, skip_serializing_if = "Usage::is_empty")]
        usage: Usage,
    },
    Status {
        status: JobStatus,
        at_ms: u64,
        #[serde(default, skip_serializing_if = "Usage::is_empty")]
        usage: Usage,
    },
    InputChanged {
        seq: u64,
    },
    /// An operator's change, taken from the inbox up to its byte `inbox_end` (or made by the writer itself).
    Control {
        control: ControlChange,
        inbox_end: u64,
    },
    /// `dmap redrive`: the record as [`JobRecord::redriven`] made it.
    Redriven {
        record: Box<JobRecord>,
    },
    /// A split listing's group of numbered pages.
    Pages {
        pages: Vec<LoggedPage>,
    },
}

#[derive(Debug)]
struct JobState {
    record: JobRecord,
    batches: Batches,
    /// A split listing's logged pages, by group (its first page's seq).
    pages: BTreeMap<u64, Vec<LoggedPage>>,
    succeeded: u64,
    failed: u64,
    /// The usage its batch records and its finish carried (the coordinators' is in the checkpoint).
    usage: Usage,
    /// The sweeper's last fingerprint of the job and since when it has shown it.
    swept: Option<(String, u64)>,
    /// The job's journal, when the store is persistent.
    journal: Option<Journal>,
    /// The job's inbox, when the store is persistent, and how many of its bytes the journal has taken.
    inbox: Option<PathBuf>,
    inbox_taken: u64,
    /// The concurrency slots' leases (holder, until), by slot. Not journaled: a lease lives no longer than
    /// the process of its holder.
    slots: Vec<Option<(String, u64)>>,
}

impl JobState {
    fn new(record: JobRecord) -> Self {
        Self {
            record,
            batches: Batches::default(),
            pages: BTreeMap::new(),
            succeeded: 0,
            failed: 0,
            usage: Usage::default(),
            swept: None,
            journal: None,
            inbox: None,
            inbox_taken: 0,
            slots: Vec::new(),
        }
    }

    /// Applies a change; `line`: where the journal holds it, if it does.
    fn apply(&mut self, change: &Change, line: Option<Line>) {
        match change {
            Change::Created { record } => self.record = (**record).clone(),
            Change::Checkpoint { checkpoint } => self.record.checkpoint = checkpoint.clone(),
            Change::ListingComplete { totals } => {
                self.record.listing = Some(*totals);
                self.record.checkpoint.next_seq = totals.batches;
                self.record.checkpoint.items_sent = totals.items;
            }
            Change::Batch { seq, record, usage } => {
                let stored = match line {
                    Some((at, len)) => StoredBatch::Journaled(at, len),
                    None => StoredBatch::Here(Box::new(record.clone())),
                };
                if self.batches.insert(*seq, stored) {
                    self.succeeded += record.succeeded;
                    self.failed = self.failed.saturating_add_signed(record.failed_delta());
                    self.usage.add(usage);
                }
            }
            Change::Status {
                status,
                at_ms,
                usage,
            } => {
                self.usage.add(usage);
                self.record.status = *status;
                if status.is_terminal() {
                    self.record.finished_at_ms = Some(*at_ms);
                }
            }
            Change::InputChanged { seq } => {
                self.record.input_changed.get_or_insert(*seq);
            }
            Change::Control { control, inbox_end } => {
                self.take_control(control);
                self.inbox_taken = self.inbox_taken.max(*inbox_end);
            }
            Change::Redriven { record } => self.record = (**record).clone(),
            Change::Pages { pages } => {
                if let Some(first) = pages.first() {
                    self.pages.insert(first.page.seq, pages.clone());
                }
            }
        }
    }

    /// Applies an operator's change: too late once the job has left RUNNING (one arriving then is dropped).
    fn take_control(&mut self, change: &ControlChange) {
        if self.record.status == JobStatus::Running {
            self.record.control.apply(change);
        }
    }

    /// The inbox's changes past what the journal has taken, each with the inbox's length after it. A last line
    /// not yet whole is left for later.
    fn inbox(&self) -> Result<Vec<(ControlChange, u64)>, JobStoreError> {
        let Some(path) = &self.inbox else {
            return Ok(Vec::new());
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(path, e)),
        };
        let mut changes = Vec::new();
        let mut at = usize::try_from(self.inbox_taken).unwrap_or(usize::MAX);
        while let Some(len) = bytes
            .get(at..)
            .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
        {
            let line = &bytes[at..at + len];
            at += len + 1;
            if line.is_empty() {
                continue;
            }
            let change = serde_json::from_slice(line).map_err(|e| {
                JobStoreError::Other(
                    format!("{}: a line is not a change: {e}", path.display()).into(),
                )
            })?;
            changes.push((change, at as u64));
        }
        Ok(changes)
    }

    /// Applies the change and, for a persistent store, appends it to the journal (which this process must
    /// be the writer of: see [`MemoryJobStore::writable`]).
    fn commit(&mut self, change: Change) -> Result<(), JobStoreError> {
        let line = match &mut self.journal {
            Some(journal) => Some(journal.append(&change)?),
            None => None,
        };
        self.apply(&change, line);
        Ok(())
    }

    /// Batch `seq`'s record, read back from the journal if it is there.
    fn batch(&self, seq: u64) -> Result<Option<BatchRecord>, JobStoreError> {
        let journal = self.journal.as_ref();
        let found = self.batches.get(seq).map_err(|e| {
            let at =
                journal.map_or_else(|| "the job store".into(), |j| j.path.display().to_string());
            JobStoreError::Other(format!("{at}: batch {seq}'s place in the journal: {e}").into())
        })?;
        match found {
            None => Ok(None),
            Some(Found::Here(record)) => Ok(Some(record.clone())),
            Some(Found::Journaled((at, len))) => {
                let journal = journal.expect("a journaled batch has a journal");
                match journal.read_line((at, len))? {
                    Change::Batch {
                        seq: line_seq,
                        record,
                        ..
                    } if line_seq == seq => Ok(Some(record)),
                    _ => Err(JobStoreError::Other(
                        format!(
                            "{}: the line at byte {at} is not batch {seq}'s record",
                            journal.path.display(),
                        )
                        .into(),
                    )),
                }
            }
        }
    }
}

/// A job's journal file and how much of it this process has applied.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes of the file applied (always at the end of a whole line).
    applied: u64,
    /// This process holds the file's exclusive lock.
    writer: bool,
}

/// Takes the file's exclusive lock if no other open file holds it: `false` if one does.
fn lock(file: &File, path: &Path) -> Result<bool, JobStoreError> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(path, e)),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> JobStoreError {
    JobStoreError::Other(format!("{}: {e}", path.display()).into())
}

impl Journal {
    /// Reads the lines appended since the last read and hands each change to `apply`, a line at a time (a
    /// journal of a million batches is hundreds of MB, never read whole). A last line without its newline is
    /// being written (or was cut short by a crash): it is left for later.
    fn follow(&mut self, mut apply: impl FnMut(Change, Line)) -> Result<(), JobStoreError> {
        use std::io::BufRead;
        let path = self.path.clone();
        self.file
            .seek(SeekFrom::Start(self.applied))
            .map_err(|e| io_error(&path, e))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &self.file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| io_error(&path, e))?;
            if line.last() != Some(&b'\n') {
                return Ok(());
            }
            let start = self.applied;
            let body = &line[..n - 1];
            if !body.is_empty() {
                let change = serde_json::from_slice(body).map_err(|e| {
                    JobStoreError::Other(
                        format!(
                            "{}: the line at byte {start} is not a change: {e}",
                            path.display()
                        )
                        .into(),
                    )
                })?;
                apply(change, (start, body.len() as u32));
            }
            self.applied += n as u64;
        }
    }

    /// The change on `line` (read where it is, whatever this handle's position).
    fn read_line(&self, (at, len): Line) -> Result<Change, JobStoreError> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0; len as usize];
        self.file
            .read_exact_at(&mut bytes, at)
            .map_err(|e| io_error(&self.path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            JobStoreError::Other(
                format!(
                    "{}: the line at byte {at} is not a change: {e}",
                    self.path.display()
                )
                .into(),
            )
        })
    }

    /// Appends a change; where its line is.
    fn append(&mut self, change: &Change) -> Result<Line, JobStoreError> {
        debug_assert!(self.writer, "only the journal's writer appends");
        let mut line = serde_json::to_vec(change).map_err(|e| JobStoreError::Other(Box::new(e)))?;
        line.push(b'\n');
        // One write of the whole line: a crash leaves at most this line cut short.
        if let Err(e) = self.file.write_all(&line) {
            // A part of the line may be written: cut it off, or the lines after it would not be where the
            // store holds them.
            let _ = self.file.set_len(self.applied);
            return Err(io_error(&self.path, e));
        }
        let at = self.applied;
        self.applied += line.len() as u64;
        Ok((at, line.len() as u32 - 1))
    }
}

/// The embedded job store.
#[derive(Debug, Default)]
pub struct MemoryJobStore {
    jobs: Mutex<HashMap<String, JobState>>,
    /// The folder of the journals, when persistent.
    dir: Option<PathBuf>,
}

impl MemoryJobStore {
    /// A store whose jobs live as long as it does.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose jobs are kept in journals under `dir` (created with the first job), and so outlive the
    /// process.
    pub fn persistent(dir: impl Into<PathBuf>) -> Self {
        Self {
            jobs: Mutex::default(),
            dir: Some(dir.into()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, JobState>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn inbox_path(&self, job_id: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{job_id}{INBOX_SUFFIX}")))
    }

    /// The job's journal, opened for reading: `None` in memory, or when the job has none.
    fn open_journal(&self, job_id: &str) -> Result<Option<(PathBuf, File)>, JobStoreError> {
        let Some(path) = self.journal_path(job_id) else {
            return Ok(None);
        };
        match File::open(&path) {
            Ok(file) => Ok(Some((path, file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    fn journal_path(&self, job_id: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{job_id}{JOURNAL_SUFFIX}")))
    }

    /// Brings the job up to date with its journal (loading it if this process has not seen it): `false` if
    /// there is no such job.
    fn refresh(
        &self,
        jobs: &mut HashMap<String, JobState>,
        job_id: &str,
    ) -> Result<bool, JobStoreError> {
        if let Some(job) = jobs.get_mut(job_id) {
            let Some(journal) = job.journal.as_mut() else {
                return Ok(true); // in memory only: up to date
            };
            if journal.writer {
                // Up to date but for operators' changes: take them.
                for (change, inbox_end) in job.inbox()? {
                    job.commit(Change::Control {
                        control: change,
                        inbox_end,
                    })?;
                }
                return Ok(true);
            }
            let mut changes = Vec::new();
            journal.follow(|c, line| changes.push((c, line)))?;
            for (change, line) in &changes {
                job.apply(change, Some(*line));
            }
            view_inbox(job)?;
            return Ok(true);
        }
        let Some((path, file)) = self.open_journal(job_id)? else {
            return Ok(false);
        };
        let mut journal = Journal {
            path,
            file,
            applied: 0,
            writer: false,
        };
        let mut state: Option<JobState> = None;
        journal.follow(|change, line| match (&mut state, &change) {
            (None, Change::Created { record }) => state = Some(JobState::new((**record).clone())),
            (Some(job), _) => job.apply(&change, Some(line)),
            // A journal starts with its job's creation; anything else before it is not ours to read.
            (None, _) => {}
        })?;
        let Some(mut state) = state else {
            return Ok(false); // created a moment ago, its first line not yet whole
        };
        state.journal = Some(journal);
        state.inbox = self.inbox_path(job_id);
        view_inbox(&mut state)?;
        jobs.insert(job_id.to_owned(), state);
        Ok(true)
    }

    /// Runs `f` on the job, up to date, for reading.
    fn read_job<T>(
        &self,
        job_id: &str,
        f: impl FnOnce(&JobState) -> Result<T, JobStoreError>,
    ) -> Result<Option<T>, JobStoreError> {
        let mut jobs = self.lock();
        if !self.refresh(&mut jobs, job_id)? {
            return Ok(None);
        }
        f(&jobs[job_id]).map(Some)
    }

    /// Runs `f` on the job, for changing it: a persistent job's journal is locked for this process first.
    fn with_job<T>(
        &self,
        job_id: &str,
        f: impl FnOnce(&mut JobState) -> Result<T, JobStoreError>,
    ) -> Result<T, JobStoreError> {
        let mut jobs = self.lock();
        if !self.refresh(&mut jobs, job_id)? {
            return Err(JobStoreError::NotFound(job_id.to_owned()));
        }
        let job = jobs.get_mut(job_id).expect("refreshed");
        Self::writable(job_id, job)?;
        f(job)
    }

    /// Makes this process the writer of the job's journal: takes its lock (refused while another process
    /// holds it), reads what was appended before, and cuts off a last line a crash left unfinished.
    fn writable(job_id: &str, job: &mut JobState) -> Result<(), JobStoreError> {
        if Self::try_writable(job)? {
            return Ok(());
        }
        let path = job.journal.as_ref().map(|j| j.path.display().to_string());
        Err(JobStoreError::Conflict {
            job_id: job_id.to_owned(),
            message: format!(
                "another process is running it (it holds {}); wait for it, or stop it first",
                path.unwrap_or_default()
            ),
        })
    }

    /// [`Self::writable`], but `false` rather than an error when another process holds the journal. The new
    /// writer then takes the inbox's waiting changes (its view already shows them: taking them changes nothing
    /// but the journal).
    fn try_writable(job: &mut JobState) -> Result<bool, JobStoreError> {
        let Some(journal) = job.journal.as_mut().filter(|j| !j.writer) else {
            return Ok(true);
        };
        let path = journal.path.clone();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        if !lock(&file, &path)? {
            return Ok(false);
        }
        journal.file = file;
        let mut changes = Vec::new();
        journal.follow(|c, line| changes.push((c, line)))?;
        journal
            .file
            .set_len(journal.applied)
            .map_err(|e| io_error(&path, e))?;
        journal.writer = true;
        for (change, line) in &changes {
            job.apply(change, Some(*line));
        }
        for (change, inbox_end) in job.inbox()? {
            job.commit(Change::Control {
                control: change,
                inbox_end,
            })?;
        }
        Ok(true)
    }

    /// Whether another process holds the job's journal (runs the job), without becoming its writer: the lock is
    /// tried and let go at once. `false` for a job this store writes, or that has no journal.
    pub fn held_elsewhere(&self, job_id: &str) -> Result<bool, JobStoreError> {
        if self
            .lock()
            .get(job_id)
            .and_then(|job| job.journal.as_ref())
            .is_some_and(|j| j.writer)
        {
            return Ok(false);
        }
        let Some((path, file)) = self.open_journal(job_id)? else {
            return Ok(false);
        };
        // Taken, it is let go as the file closes.
        Ok(!lock(&file, &path)?)
    }

    /// Whether another process is running the job (holds its journal). Otherwise this store becomes its
    /// writer, so that what it does next (finalizing an abort, say) is not refused. `NotFound` for no job.
    pub fn running_elsewhere(&self, job_id: &str) -> Result<bool, JobStoreError> {
        let mut jobs = self.lock();
        if !self.refresh(&mut jobs, job_id)? {
            return Err(JobStoreError::NotFound(job_id.to_owned()));
        }
        Ok(!Self::try_writable(
            jobs.get_mut(job_id).expect("refreshed"),
        )?)
    }

    /// The ids of the jobs with journals under the store's folder, and of those in memory.
    fn known_jobs(&self) -> Result<Vec<String>, JobStoreError> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        if let Some(dir) = &self.dir {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
                Err(e) => return Err(io_error(dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_error(dir, e))?;
                if let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.strip_suffix(JOURNAL_SUFFIX))
                {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

/// For a reader: shows the inbox's changes that the writer has not taken yet, as it will take them. Only in the
/// view: the journal's record of them, when it comes, applies them again (which changes nothing).
fn view_inbox(job: &mut JobState) -> Result<(), JobStoreError> {
    for (change, _) in job.inbox()? {
        job.take_control(&change);
    }
    Ok(())
}

fn conflict(job_id: &str, message: impl Into<String>) -> JobStoreError {
    JobStoreError::Conflict {
        job_id: job_id.to_owned(),
        message: message.into(),
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create_job(&self, record: &JobRecord) -> Result<CreateOutcome, JobStoreError> {
        let job_id = record.job.job_id.as_str();
        let mut jobs = self.lock();
        if self.refresh(&mut jobs, job_id)? {
            return Ok(CreateOutcome::Exists(Box::new(jobs[job_id].record.clone())));
        }
        let mut state = JobState::new(record.clone());
        if let (Some(path), Some(dir)) = (self.journal_path(job_id), &self.dir) {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            // Of two processes creating the job, one creates the file and the other finds it. The creator
            // holds its lock until (and after) its first line is written; a file that nobody holds and whose
            // first line is not whole was left by a creator that died: it is taken over.
            let busy = || conflict(job_id, "being created by another process");
            let opened = OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .open(&path);
            let file = match opened {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io_error(&path, e))?,
                Err(e) => return Err(io_error(&path, e)),
            };
            if !lock(&file, &path)? {
                return Err(busy());
            }
            let whole_line = std::fs::read(&path)
                .map_err(|e| io_error(&path, e))?
                .contains(&b'\n');
            if whole_line {
                return Err(busy()); // created a moment ago, by another process
            }
            file.set_len(0).map_err(|e| io_error(&path, e))?;
            state.journal = Some(Journal {
                path,
                file,
                applied: 0,
                writer: true,
            });
            state.inbox = self.inbox_path(job_id);
        }
        state.commit(Change::Created {
            record: Box::new(record.clone()),
        })?;
        jobs.insert(job_id.to_owned(), state);
        Ok(CreateOutcome::Created)
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        self.read_job(job_id, |job| Ok(job.record.clone()))
    }

    async fn save_checkpoint(
        &self,
        job_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), JobStoreError> {
        self.with_job(job_id, |job| {
            if job.record.listing.is_some() {
                return Err(conflict(job_id, "the listing is already complete"));
            }
            let stored = &job.record.checkpoint;
            if let Some(why) = checkpoint.refused_over(stored) {
                return Err(conflict(job_id, why));
            }
            if checkpoint.next_seq >= stored.next_seq {
                let (hop, hop_sent) = (stored.hop, stored.hop_sent);
                job.commit(Change::Checkpoint {
                    checkpoint: Checkpoint {
                        hop,
                        hop_sent,
                        ..checkpoint.clone()
                    },
                })?;
            }
            if job.record.abort_requested() {
                return Err(conflict(job_id, "the job was aborted"));
            }
            Ok(())
        })
    }

    async fn take_listing(
        &self,
        job_id: &str,
        hop: u32,
        lease: &str,
    ) -> Result<Option<JobRecord>, JobStoreError> {
        self.with_job(job_id, |job| {
            if job.record.listing.is_some() {
                return Err(conflict(job_id, "the listing is already complete"));
            }
            if job.record.checkpoint.hop != hop {
                return Ok(None);
            }
            job.commit(Change::Checkpoint {
                checkpoint: Checkpoint {
                    lease: Some(lease.to_owned()),
                    ..job.record.checkpoint.clone()
                },
            })?;
            Ok(Some(job.record.clone()))
        })
    }

    async fn hand_over(
        &self,
        job_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<bool, JobStoreError> {
        self.with_job(job_id, |job| {
            let stored = &job.record.checkpoint;
            let ok = job.record.listing.is_none()
                && checkpoint.hop == stored.hop + 1
                && checkpoint.next_seq >= stored.next_seq
                && checkpoint.refused_over(stored).is_none();
            if ok {
                job.commit(Change::Checkpoint {
                    checkpoint: Checkpoint {
                        hop_sent: false,
                        ..checkpoint.clone()
                    },
                })?;
            }
            Ok(ok)
        })
    }

    async fn continuation_sent(&self, job_id: &str, hop: u32) -> Result<(), JobStoreError> {
        self.with_job(job_id, |job| {
            let stored = &job.record.checkpoint;
            if stored.hop == hop && !stored.hop_sent {
                job.commit(Change::Checkpoint {
                    checkpoint: Checkpoint {
                        hop_sent: true,
                        ..stored.clone()
                    },
                })?;
            }
            Ok(())
        })
    }

    async fn complete_listing(
        &self,
        job_id: &str,
        totals: ListingTotals,
    ) -> Result<(), JobStoreError> {
        self.with_job(job_id, |job| match job.record.listing {
            Some(existing) if existing == totals => Ok(()),
            Some(existing) => Err(conflict(
                job_id,
                format!("listing already completed with {existing:?}, not {totals:?}"),
            )),
            None => job.commit(Change::ListingComplete { totals }),
        })
    }

    async fn record_batch(
        &self,
        job_id: &str,
        seq: u64,
        record: &BatchRecord,
        usage: &Usage,
    ) -> Result<Recorded, JobStoreError> {
        // The marker and the counters change under one lock: a marker here is always counted.
        self.with_job(job_id, |job| {
            if let Some(stored) = job.batch(seq)? {
                return Ok(Recorded {
                    outcome: RecordOutcome::Duplicate,
                    record: stored,
                    group: None,
                });
            }
            job.commit(Change::Batch {
                seq,
                record: record.clone(),
                usage: usage.clone(),
            })?;
            Ok(Recorded {
                outcome: RecordOutcome::Recorded,
                record: record.clone(),
                group: None,
            })
        })
    }

    async fn batch_record(
        &self,
        job_id: &str,
        seq: u64,
    ) -> Result<Option<BatchRecord>, JobStoreError> {
        self.read_job(job_id, |job| job.batch(seq))?
            .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()))
    }

    async fn batch_records(
        &self,
        job_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, BatchRecord)>, JobStoreError> {
        self.read_job(job_id, |job| {
            job.batches
                .seqs(from, to)
                .map(|seq| {
                    let record = job.batch(seq)?.expect("in the index");
                    Ok((seq, record))
                })
                .collect()
        })?
        .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()))
    }

    async fn progress(&self, job_id: &str) -> Result<Progress, JobStoreError> {
        self.read_job(job_id, |job| {
            Ok(Progress {
                status: job.record.status,
                listing: job.record.listing,
                items_sent: job.record.checkpoint.items_sent,
                batches_done: match job.record.listing {
                    Some(totals) => job.batches.count_below(totals.batches),
                    None => job.batches.len(),
                },
                succeeded: job.succeeded,
                failed: job.failed,
                usage: {
                    let mut usage = job.usage.clone();
                    usage.add(&job.record.checkpoint.usage);
                    usage
                },
            })
        })?
        .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()))
    }

    async fn claim_finalization(&self, job_id: &str) -> Result<bool, JobStoreError> {
        self.with_job(job_id, |job| {
            if job.record.status == JobStatus::Running
                && job.record.listing.is_some()
                && !job.record.abort_requested()
            {
                job.commit(Change::Status {
                    status: JobStatus::Finalizing,
                    at_ms: now_ms(),
                    usage: Usage::default(),
                })?;
                Ok(true)
            } else {
                Ok(false)
            }
        })
    }

    async fn claim_abort(&self, job_id: &str) -> Result<bool, JobStoreError> {
        self.with_job(job_id, |job| {
            if job.record.status == JobStatus::Running && job.record.abort_requested() {
                job.commit(Change::Status {
                    status: JobStatus::Finalizing,
                    at_ms: now_ms(),
                    usage: Usage::default(),
                })?;
                Ok(true)
            } else {
                Ok(false)
            }
        })
    }

    async fn acquire_slot(
        &self,
        job_id: &str,
        max: u32,
        holder: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<u32>, JobStoreError> {
        let mut jobs = self.lock();
        if !self.refresh(&mut jobs, job_id)? {
            return Err(JobStoreError::NotFound(job_id.to_owned()));
        }
        let slots = &mut jobs.get_mut(job_id).expect("refreshed").slots;
        let live =
            |slot: &Option<(String, u64)>| slot.as_ref().is_some_and(|(_, until)| *until > now_ms);
        if slots.iter().filter(|s| live(s)).count() >= max as usize {
            return Ok(None);
        }
        slots.resize(slots.len().max(max as usize), None);
        let free = (0..max as usize).find(|k| !live(&slots[*k]));
        Ok(free.map(|k| {
            slots[k] = Some((holder.to_owned(), until_ms));
            k as u32
        }))
    }

    async fn release_slot(
        &self,
        job_id: &str,
        slot: u32,
        holder: &str,
    ) -> Result<(), JobStoreError> {
        let mut jobs = self.lock();
        if let Some(lease) = jobs
            .get_mut(job_id)
            .and_then(|job| job.slots.get_mut(slot as usize))
            .filter(|lease| lease.as_ref().is_some_and(|(h, _)| h == holder))
        {
            *lease = None;
        }
        Ok(())
    }

    async fn control(
        &self,
        job_id: &str,
        change: &ControlChange,
    ) -> Result<JobRecord, JobStoreError> {
        let mut jobs = self.lock();
        if !self.refresh(&mut jobs, job_id)? {
            return Err(JobStoreError::NotFound(job_id.to_owned()));
        }
        let job = jobs.get_mut(job_id).expect("refreshed");
        if job.record.status != JobStatus::Running {
            return Err(conflict(
                job_id,
                format!(
                    "it is {}: only a RUNNING job can be aborted or updated",
                    job.record.status.as_str()
                ),
            ));
        }
        if Self::try_writable(job)? {
            let inbox_end = job.inbox_taken;
            job.commit(Change::Control {
                control: change.clone(),
                inbox_end,
            })?;
            return Ok(job.record.clone());
        }
        // Another process runs the job: leave the change in its inbox, in one write of one line.
        let path = job.inbox.clone().expect("a journaled job has an inbox");
        let mut line = serde_json::to_vec(change).map_err(|e| JobStoreError::Other(Box::new(e)))?;
        line.push(b'\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&line))
            .map_err(|e| io_error(&path, e))?;
        job.take_control(change);
        Ok(job.record.clone())
    }

    async fn active_jobs(&self) -> Result<Vec<String>, JobStoreError> {
        let mut active = Vec::new();
        for id in self.known_jobs()? {
            if self
                .read_job(&id, |job| Ok(!job.record.status.is_terminal()))?
                .unwrap_or(false)
            {
                active.push(id);
            }
        }
        Ok(active)
    }

    async fn recent_jobs(&self, limit: usize) -> Result<Vec<String>, JobStoreError> {
        let mut jobs = Vec::new();
        for id in self.known_jobs()? {
            if let Some(created) = self.read_job(&id, |job| Ok(job.record.created_at_ms))? {
                jobs.push((created, id));
            }
        }
        jobs.sort_by(|a, b| b.cmp(a));
        Ok(jobs.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    async fn forget_active(&self, _job_id: &str) -> Result<(), JobStoreError> {
        Ok(()) // active_jobs reads the statuses themselves
    }

    async fn note_progress(
        &self,
        job_id: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<u64, JobStoreError> {
        // The sweeper's notes are the process's own: a later process starts its count afresh.
        let mut jobs = self.lock();
        if !self.refresh(&mut jobs, job_id)? {
            return Err(JobStoreError::NotFound(job_id.to_owned()));
        }
        let job = jobs.get_mut(job_id).expect("refreshed");
        Ok(match &job.swept {
            Some((seen, since)) if seen == fingerprint => *since,
            _ => {
                job.swept = Some((fingerprint.to_owned(), now_ms));
                now_ms
            }
        })
    }

    async fn log_pages(&self, job_id: &str, pages: &[LoggedPage]) -> Result<(), JobStoreError> {
        self.with_job(job_id, |job| {
            job.commit(Change::Pages {
                pages: pages.to_vec(),
            })
        })
    }

    async fn logged_pages(&self, job_id: &str) -> Result<Vec<LoggedPage>, JobStoreError> {
        self.read_job(job_id, |job| {
            Ok(job.pages.values().flatten().cloned().collect())
        })?
        .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()))
    }

    async fn flag_input_changed(&self, job_id: &str, seq: u64) -> Result<(), JobStoreError> {
        self.with_job(job_id, |job| {
            if job.record.input_changed.is_some() {
                return Ok(());
            }
            job.commit(Change::InputChanged { seq })
        })
    }

    async fn redrive(&self, expected: &JobRecord) -> Result<JobRecord, JobStoreError> {
        let job_id = expected.job.job_id.as_str();
        self.with_job(job_id, |job| {
            let now = &job.record;
            if now.status != expected.status || now.redrives != expected.redrives {
                return Err(conflict(job_id, now.redrive_conflict(expected)));
            }
            now.redrivable().map_err(|why| conflict(job_id, why))?;
            job.commit(Change::Redriven {
                record: Box::new(now.redriven()),
            })?;
            Ok(job.record.clone())
        })
    }

    async fn finish(
        &self,
        job_id: &str,
        status: TerminalStatus,
        usage: &Usage,
    ) -> Result<bool, JobStoreError> {
        self.with_job(job_id, |job| {
            let target = JobStatus::from(status);
            match job.record.status {
                JobStatus::Finalizing => {
                    job.commit(Change::Status {
                        status: target,
                        at_ms: now_ms(),
                        usage: usage.clone(),
                    })?;
                    Ok(true)
                }
                s if s == target => Ok(false),
                s => Err(conflict(
                    job_id,
                    format!("cannot move from {} to {}", s.as_str(), target.as_str()),
                )),
            }
        })
    }
}
