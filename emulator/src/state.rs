//! The state every route shares: configuration, issued tokens, faults, call counts and the
//! recorded Vertex AI requests.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::EmulatorConfig;
use crate::faults::{Fault, Target, Traffic};
use crate::recorder::{RecordedRequest, Recordings, StreamEnd};
use crate::tokens::{AccessTokenInfo, IssuedTokens, Principal};

/// A cheap handle on the emulator's shared state, for routes and for [`crate::RunningEmulator`].
#[derive(Clone)]
pub(crate) struct EmulatorState(Arc<Shared>);

struct Shared {
    config: EmulatorConfig,
    tokens: Mutex<IssuedTokens>,
    traffic: Mutex<Traffic>,
    vertex_requests: Mutex<Recordings>,
}

/// Locks a mutex; a panic elsewhere while it was held leaves plain data that is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EmulatorState {
    pub(crate) fn new(config: EmulatorConfig) -> Self {
        EmulatorState(Arc::new(Shared {
            config,
            tokens: Mutex::default(),
            traffic: Mutex::default(),
            vertex_requests: Mutex::default(),
        }))
    }

    pub(crate) fn config(&self) -> &EmulatorConfig {
        &self.0.config
    }

    /// The current instant on the configured clock.
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.0.config.clock.now()
    }

    /// Mints and records a token for `principal`, valid for `lifetime` from now.
    pub(crate) fn issue_token(
        &self,
        principal: Principal,
        scopes: Vec<String>,
        lifetime: Duration,
    ) -> (String, AccessTokenInfo) {
        let now = self.now();
        lock(&self.0.tokens).issue(principal, scopes, now, lifetime)
    }

    /// The record of a token this emulator issued, if it has not expired.
    pub(crate) fn access_token_info(&self, token: &str) -> Option<AccessTokenInfo> {
        let now = self.now();
        lock(&self.0.tokens).lookup(token, now).cloned()
    }

    /// The record of a token this emulator issued, even expired, until it is forgotten.
    pub(crate) fn issued_token(&self, token: &str) -> Option<AccessTokenInfo> {
        lock(&self.0.tokens).issued(token).cloned()
    }

    pub(crate) fn inject(&self, target: Target, fault: Fault) {
        lock(&self.0.traffic).inject(target, fault);
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.0.traffic).clear_faults();
    }

    pub(crate) fn calls(&self, target: Target) -> u64 {
        lock(&self.0.traffic).calls(target)
    }

    /// Counts a request to `target` and takes one use of the first fault queued for it.
    pub(crate) fn record_call(&self, target: Target) -> Option<Fault> {
        lock(&self.0.traffic).record_call(target)
    }

    /// Keeps a request Vertex AI received; answers where its stream notes its end.
    pub(crate) fn record_vertex_request(&self, request: RecordedRequest) -> StreamEnd {
        lock(&self.0.vertex_requests).record(request)
    }

    pub(crate) fn vertex_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.0.vertex_requests).requests()
    }
}
