//! An in-process queue with SQS standard-queue semantics: at-least-once delivery, a visibility timeout after
//! each receive, redelivery of what is not deleted in time, receive counts, and a dead-letter queue that takes
//! a message received more than `max_receive_count` times.
//!
//! Fair, as an SQS standard queue is for messages with a group id (fair queues): the visible messages of the
//! groups are delivered in turn, so a group with a large backlog (a big job's batches) does not hold back the
//! others' (a small job started after it). Messages without a group form one group.
//!
//! One addition SQS does not have: an optional backlog limit that makes `send_batch` wait while the queue is
//! full, so an embedded run's memory does not grow with the number of batches.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ports::{
    BatchQueue, OutgoingMessage, QueueDepth, QueueError, ReceivedMessage, SendFailure,
};
use crate::spec::MAX_MESSAGE_BYTES;

/// Queue attributes.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub name: String,
    pub visibility_timeout: Duration,
    /// Where a message received more than `max_receive_count` times goes (a redrive policy).
    pub dead_letter: Option<(u32, Arc<EmbeddedQueue>)>,
    /// Most messages held (visible or in flight) before `send_batch` waits.
    pub backlog_limit: Option<usize>,
}

impl QueueConfig {
    pub fn new(name: &str, visibility_timeout: Duration) -> Self {
        Self {
            name: name.to_owned(),
            visibility_timeout,
            dead_letter: None,
            backlog_limit: None,
        }
    }
}

#[derive(Debug)]
struct Stored {
    body: String,
    group: String,
    receive_count: u32,
    receipt: Option<String>,
    visible_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    messages: HashMap<u64, Stored>,
    /// Each group's messages, by the time each is (or becomes again) visible; in-flight ones sit in the future.
    schedules: HashMap<String, BTreeSet<(Instant, u64)>>,
    /// The groups with messages, in the order they take their turns: a group served goes to the back.
    turns: VecDeque<String>,
    next_id: u64,
}

impl State {
    fn schedule(&mut self, group: &str, visible_at: Instant, id: u64) {
        if !self.schedules.contains_key(group) {
            self.turns.push_back(group.to_owned());
        }
        self.schedules
            .entry(group.to_owned())
            .or_default()
            .insert((visible_at, id));
    }

    fn unschedule(&mut self, group: &str, visible_at: Instant, id: u64) {
        if let Some(schedule) = self.schedules.get_mut(group) {
            schedule.remove(&(visible_at, id));
            if schedule.is_empty() {
                self.schedules.remove(group);
                self.turns.retain(|g| g != group);
            }
        }
    }

    /// The next message to deliver at `now`: the first visible one of the first group in turn that has one.
    fn next_visible(&mut self, now: Instant) -> Option<(String, Instant, u64)> {
        let turn = self.turns.iter().position(|group| {
            self.schedules[group]
                .first()
                .is_some_and(|&(visible_at, _)| visible_at <= now)
        })?;
        let group = self.turns.remove(turn).expect("a position in the turns");
        self.turns.push_back(group.clone());
        let &(visible_at, id) = self.schedules[&group].first().expect("a visible message");
        Some((group, visible_at, id))
    }

    /// When the next message becomes visible.
    fn next_time(&self) -> Option<Instant> {
        self.schedules
            .values()
            .filter_map(|s| s.first().map(|&(t, _)| t))
            .min()
    }
}

/// The embedded queue.
#[derive(Debug)]
pub struct EmbeddedQueue {
    config: QueueConfig,
    state: Mutex<State>,
    arrived: Notify,
    freed: Notify,
}

impl EmbeddedQueue {
    pub fn new(config: QueueConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            freed: Notify::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(&self, body: String, group: Option<&str>) {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let now = Instant::now();
        let group = group.unwrap_or_default().to_owned();
        state.schedule(&group, now, id);
        state.messages.insert(
            id,
            Stored {
                body,
                group,
                receive_count: 0,
                receipt: None,
                visible_at: now,
            },
        );
        drop(state);
        self.arrived.notify_waiters();
    }

    async fn wait_for_room(&self) {
        let Some(limit) = self.config.backlog_limit else {
            return;
        };
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.lock().messages.len() < limit {
                return;
            }
            freed.await;
        }
    }

    /// Takes up to `max` visible messages, moving over-received ones to the dead-letter queue.
    fn take_visible(&self, max: usize, now: Instant) -> (Vec<ReceivedMessage>, Option<Instant>) {
        let mut state = self.lock();
        let mut out = Vec::new();
        let mut dead = Vec::new();
        while out.len() < max {
            let Some((group, visible_at, id)) = state.next_visible(now) else {
                break;
            };
            state.unschedule(&group, visible_at, id);
            let stored = state
                .messages
                .get_mut(&id)
                .expect("scheduled messages exist");
            stored.receive_count += 1;
            if let Some((max_receives, _)) = &self.config.dead_letter
                && stored.receive_count > *max_receives
            {
                let stored = state.messages.remove(&id).expect("present");
                dead.push((stored.body, stored.group));
                continue;
            }
            let receipt = format!(
                "{id}:{}:{}",
                stored.receive_count,
                uuid::Uuid::new_v4().simple()
            );
            stored.receipt = Some(receipt.clone());
            stored.visible_at = now + self.config.visibility_timeout;
            out.push(ReceivedMessage {
                message_id: format!("{}-{id}", self.config.name),
                receipt_handle: receipt,
                body: stored.body.clone(),
                receive_count: stored.receive_count,
            });
            let visible_at = stored.visible_at;
            state.schedule(&group, visible_at, id);
        }
        let next = state.next_time();
        drop(state);
        if !dead.is_empty() {
            if let Some((_, dlq)) = &self.config.dead_letter {
                for (body, group) in dead {
                    dlq.enqueue(
                        body,
                        Some(&group).filter(|g| !g.is_empty()).map(String::as_str),
                    );
                }
            }
            self.freed.notify_waiters();
        }
        (out, next)
    }

    /// The current delivery's message id for a receipt handle, if the handle is still current.
    fn current(state: &State, receipt: &str) -> Option<u64> {
        let id: u64 = receipt.split(':').next()?.parse().ok()?;
        let stored = state.messages.get(&id)?;
        (stored.receipt.as_deref() == Some(receipt)).then_some(id)
    }
}

#[async_trait]
impl BatchQueue for EmbeddedQueue {
    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<SendFailure>, QueueError> {
        let mut failures = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            if messages[..i].iter().any(|m| m.id == message.id) {
                return Err(QueueError::Other(
                    format!("batch entry id \"{}\" is not unique", message.id).into(),
                ));
            }
            if message.body.len() > MAX_MESSAGE_BYTES as usize {
                failures.push(SendFailure::too_long(message, MAX_MESSAGE_BYTES as usize));
                continue;
            }
            self.wait_for_room().await;
            self.enqueue(message.body.clone(), message.group.as_deref());
        }
        Ok(failures)
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let now = Instant::now();
            let (messages, next_visible) = self.take_visible(max.clamp(1, 10), now);
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            let wake = next_visible.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let mut state = self.lock();
        // A stale handle (the message was received again since) deletes nothing: the newer delivery owns it.
        if let Some(id) = Self::current(&state, receipt_handle) {
            let stored = state.messages.remove(&id).expect("current");
            state.unschedule(&stored.group, stored.visible_at, id);
            drop(state);
            self.freed.notify_waiters();
        }
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let now = Instant::now();
        let id = Self::current(&state, receipt_handle).ok_or(QueueError::InvalidReceipt)?;
        let stored = state.messages.get_mut(&id).expect("current");
        if stored.visible_at <= now {
            return Err(QueueError::InvalidReceipt);
        }
        let old = stored.visible_at;
        stored.visible_at = now + timeout;
        let (new, group) = (stored.visible_at, stored.group.clone());
        state.unschedule(&group, old, id);
        state.schedule(&group, new, id);
        drop(state);
        if timeout.is_zero() {
            self.arrived.notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let state = self.lock();
        let now = Instant::now();
        let visible = state
            .schedules
            .values()
            .map(|s| s.iter().take_while(|(t, _)| *t <= now).count() as u64)
            .sum();
        Ok(QueueDepth {
            visible,
            in_flight: state.messages.len() as u64 - visible,
        })
    }
}
