//! Request bodies: whole (JSON) or a file sent in chunks, with progress for people watching.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Hears how many bytes of an upload have been sent so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Chunk size of a file body: small enough for a smooth progress bar, large enough to cost
/// nothing.
const CHUNK: usize = 64 << 10;

/// A request body.
pub struct RequestBody {
    data: Bytes,
    sent: usize,
    progress: Option<Progress>,
}

impl RequestBody {
    /// No body.
    pub fn empty() -> Self {
        RequestBody { data: Bytes::new(), sent: 0, progress: None }
    }

    /// `data`: in one frame, or with `progress`, in chunks, telling it after each.
    pub fn file(data: Bytes, progress: Option<Progress>) -> Self {
        RequestBody { data, sent: 0, progress }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.sent >= this.data.len() {
            return Poll::Ready(None);
        }
        let step = if this.progress.is_some() { CHUNK } else { this.data.len() };
        let end = this.data.len().min(this.sent + step);
        let chunk = this.data.slice(this.sent..end);
        this.sent = end;
        if let Some(progress) = &this.progress {
            progress(end as u64);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.data.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.data.len() - self.sent) as u64)
    }
}
