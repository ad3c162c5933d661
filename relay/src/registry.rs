//! Live subscriptions, shared by all connections.
//!
//! At most one connection is the subscriber of a queue. The registry maps a queue to that
//! connection's [`Mailbox`]; other connections post events there ("a new message arrived",
//! "your subscription ended") and the subscriber's task acts on them. A mailbox holds each
//! (queue, event) pair at most once, so it never grows beyond the queues the connection
//! subscribed to, however fast events come: bounded memory without dropping a wake-up.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use tidings_protocol::ids::RecipientId;

/// Identifies one connection for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent (every update is
    // one insert or remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
struct Events {
    new_message: HashSet<RecipientId>,
    ended: HashSet<RecipientId>,
}

/// Events waiting for one connection.
#[derive(Default)]
pub struct Mailbox {
    events: Mutex<Events>,
    notify: Notify,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox(..)")
    }
}

/// What a connection takes out of its mailbox.
#[derive(Debug, Default)]
pub struct Taken {
    /// Queues whose subscription another connection took over or that were deleted.
    pub ended: Vec<RecipientId>,
    /// Queues where something changed (a message arrived or was acked elsewhere).
    pub new_message: Vec<RecipientId>,
}

impl Mailbox {
    fn post_new(&self, queue: RecipientId) {
        lock(&self.events).new_message.insert(queue);
        self.notify.notify_one();
    }

    fn post_end(&self, queue: RecipientId) {
        lock(&self.events).ended.insert(queue);
        self.notify.notify_one();
    }

    /// Resolves when something was posted since the last [`Mailbox::take`] (a post before
    /// this call is not lost).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Takes every waiting `ended` event and at most `limit` `new_message` events; if more
    /// are left, the mailbox stays notified so the rest are taken on the next turn.
    pub fn take(&self, limit: usize) -> Taken {
        let mut events = lock(&self.events);
        let ended = events.ended.drain().collect();
        let new_message: Vec<RecipientId> =
            events.new_message.iter().take(limit).copied().collect();
        for queue in &new_message {
            events.new_message.remove(queue);
        }
        if !events.new_message.is_empty() {
            self.notify.notify_one();
        }
        Taken { ended, new_message }
    }
}

struct Subscriber {
    conn: ConnId,
    mailbox: Arc<Mailbox>,
}

/// Which connection subscribes to which queue.
#[derive(Default)]
pub struct Registry {
    subscribers: Mutex<HashMap<RecipientId, Subscriber>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry(..)")
    }
}

impl Registry {
    /// Makes `conn` the subscriber of `queue`; a previous subscriber on another connection is
    /// told its subscription ended.
    pub fn subscribe(&self, queue: RecipientId, conn: ConnId, mailbox: &Arc<Mailbox>) {
        let previous = lock(&self.subscribers).insert(
            queue,
            Subscriber {
                conn,
                mailbox: Arc::clone(mailbox),
            },
        );
        if let Some(prev) = previous {
            if prev.conn != conn {
                prev.mailbox.post_end(queue);
            }
        }
    }

    /// Whether `conn` is the subscriber of `queue`.
    pub fn is_subscriber(&self, queue: &RecipientId, conn: ConnId) -> bool {
        lock(&self.subscribers)
            .get(queue)
            .is_some_and(|s| s.conn == conn)
    }

    /// Tells the subscriber of `queue`, unless it is `except`, that the queue changed.
    pub fn notify_changed(&self, queue: &RecipientId, except: ConnId) {
        let mailbox = lock(&self.subscribers)
            .get(queue)
            .filter(|s| s.conn != except)
            .map(|s| Arc::clone(&s.mailbox));
        if let Some(mailbox) = mailbox {
            mailbox.post_new(*queue);
        }
    }

    /// Tells every subscriber that its queue may have changed (after an expiry sweep deleted
    /// messages, possibly ones delivered and not yet acked).
    pub fn notify_all_changed(&self) {
        let all: Vec<(RecipientId, Arc<Mailbox>)> = lock(&self.subscribers)
            .iter()
            .map(|(q, s)| (*q, Arc::clone(&s.mailbox)))
            .collect();
        for (queue, mailbox) in all {
            mailbox.post_new(queue);
        }
    }

    /// Ends the subscription of `queue` (the queue was deleted). Returns the connection that
    /// was subscribed; if it is not `current`, it is told through its mailbox.
    pub fn end(&self, queue: &RecipientId, current: ConnId) -> Option<ConnId> {
        let previous = lock(&self.subscribers).remove(queue);
        previous.map(|prev| {
            if prev.conn != current {
                prev.mailbox.post_end(*queue);
            }
            prev.conn
        })
    }

    /// Removes `conn`'s subscriptions to `queues` (the connection ended). Subscriptions that
    /// another connection has taken over are left alone.
    pub fn unsubscribe_all<'a>(&self, conn: ConnId, queues: impl Iterator<Item = &'a RecipientId>) {
        let mut subs = lock(&self.subscribers);
        for queue in queues {
            if subs.get(queue).is_some_and(|s| s.conn == conn) {
                subs.remove(queue);
            }
        }
    }

    /// How many queues have a live subscriber.
    pub fn len(&self) -> usize {
        lock(&self.subscribers).len()
    }

    /// Whether no queue has a live subscriber.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
