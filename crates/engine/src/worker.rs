//! The model-owning thread. Handlers send it commands over a channel; it runs the generation
//! engine, batching every running request into one forward pass per step, and streams each
//! sequence's tokens back on that sequence's own channel. A client that goes away has its
//! sequences cancelled; an engine failure (even a panic) fails the requests in flight, and the
//! thread carries on.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use model::generate::{Engine, Request, TokenEvent};
use tokio::sync::mpsc;

/// What a sequence's channel receives.
#[derive(Debug, Clone)]
pub enum SequenceEvent {
    Token(TokenEvent),
    Failed(String),
}

/// A command to the worker.
pub enum Command {
    /// Start these sequences; their events go to `events`.
    Submit {
        requests: Vec<Request>,
        events: mpsc::UnboundedSender<SequenceEvent>,
    },
    /// Replace the model's weights between two steps; `done` is told once they are in place.
    SetModel {
        model: Box<model::CausalLm>,
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// Handle to the worker thread.
#[derive(Clone)]
pub struct Worker {
    commands: mpsc::UnboundedSender<Command>,
}

impl Worker {
    /// Starts the thread that owns `engine`.
    pub fn spawn(engine: Engine) -> std::io::Result<Self> {
        let (commands, receiver) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("model-worker".into())
            .spawn(move || run(engine, receiver))?;
        Ok(Self { commands })
    }

    /// Submits sequences; returns the channel of their events, or `None` if the worker is gone.
    pub fn submit(&self, requests: Vec<Request>) -> Option<mpsc::UnboundedReceiver<SequenceEvent>> {
        let (events, receiver) = mpsc::unbounded_channel();
        self.commands
            .send(Command::Submit { requests, events })
            .ok()
            .map(|_| receiver)
    }

    /// Replaces the weights; returns once the worker uses them (false if it is gone).
    pub async fn set_model(&self, model: model::CausalLm) -> bool {
        let (done, wait) = tokio::sync::oneshot::channel();
        let sent = self.commands.send(Command::SetModel {
            model: Box::new(model),
            done,
        });
        sent.is_ok() && wait.await.is_ok()
    }
}

fn run(mut engine: Engine, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut senders: HashMap<u64, mpsc::UnboundedSender<SequenceEvent>> = HashMap::new();
    loop {
        if !engine.has_work() {
            match commands.blocking_recv() {
                Some(command) => handle(&mut engine, &mut senders, command),
                None => return,
            }
        }
        while let Ok(command) = commands.try_recv() {
            handle(&mut engine, &mut senders, command);
        }
        if !engine.has_work() {
            continue;
        }
        let step = std::panic::catch_unwind(AssertUnwindSafe(|| engine.step()));
        let failure = match step {
            Ok(Ok(events)) => {
                for event in events {
                    let id = event.id;
                    let finished = event.finish.is_some();
                    let delivered = senders
                        .get(&id)
                        .is_some_and(|s| s.send(SequenceEvent::Token(event)).is_ok());
                    if finished || !delivered {
                        senders.remove(&id);
                    }
                    if !delivered && !finished {
                        // The client went away: stop spending compute on it.
                        if let Err(e) = engine.cancel(id) {
                            tracing::warn!("cancelling sequence {id}: {e}");
                        }
                    }
                }
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(format!(
                "the engine panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown cause")
            )),
        };
        if let Some(message) = failure {
            tracing::error!("generation step failed: {message}");
            for id in engine.reset() {
                if let Some(sender) = senders.remove(&id) {
                    let _ = sender.send(SequenceEvent::Failed(message.clone()));
                }
            }
        }
    }
}

fn handle(
    engine: &mut Engine,
    senders: &mut HashMap<u64, mpsc::UnboundedSender<SequenceEvent>>,
    command: Command,
) {
    match command {
        Command::SetModel { model, done } => {
            engine.set_model(*model);
            let _ = done.send(());
        }
        Command::Submit { requests, events } => {
            for request in requests {
                let id = request.id;
                match engine.submit(request) {
                    Ok(()) => {
                        senders.insert(id, events.clone());
                    }
                    Err(e) => {
                        let _ = events.send(SequenceEvent::Failed(e.to_string()));
                    }
                }
            }
        }
    }
}
