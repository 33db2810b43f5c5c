//! A server task that stops when asked, or at once when its handle is dropped.

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The signal a server's graceful shutdown waits for.
pub(crate) type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A spawned server: the emulator's or the front's.
pub(crate) struct Serving {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Serving {
    /// Spawns the server `serve` builds around the stop signal it is handed.
    pub(crate) fn spawn<Fut>(serve: impl FnOnce(StopSignal) -> Fut) -> Self
    where
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        // A dropped sender stops the server as a sent signal does.
        let signal: StopSignal = Box::pin(async {
            let _ = stopped.await;
        });
        Self {
            stop: Some(stop),
            task: Some(tokio::spawn(serve(signal))),
        }
    }

    /// Stops accepting connections, waits for requests in flight, and reports how serving
    /// ended.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
