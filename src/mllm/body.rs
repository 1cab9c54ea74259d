//! A request body in pieces: the JSON text around the images, and the images' data
//! URLs as the very bytes the image cache holds.
//!
//! A 1-shot MMAD question at full resolution carries two data URLs of about 2 MB
//! each. Joining them into one buffer per request cost a copy of every byte and,
//! worse, fresh pages for every buffer (the kernel zeroes each one): about a third
//! of the runner's CPU at 128 requests in flight. Sent as a list of shared chunks
//! with an exact length, the HTTP stack writes them to the socket with vectored
//! writes, and the only copy left is the kernel's.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Bytes, Frame, SizeHint};

/// The serialised body, cheap to clone (every attempt of a request sends it anew).
#[derive(Debug, Clone)]
pub(crate) struct RequestBody {
    chunks: Arc<[Bytes]>,
    len: u64,
}

impl RequestBody {
    pub fn new(chunks: Vec<Bytes>) -> Self {
        let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        RequestBody {
            chunks: chunks.into(),
            len,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// The whole body as one buffer (tests, and messages that quote it).
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    /// A fresh body for one HTTP attempt.
    pub fn to_http(&self) -> reqwest::Body {
        reqwest::Body::wrap(Chunks {
            queue: self.chunks.iter().cloned().collect(),
            remaining: self.len,
        })
    }
}

impl From<Vec<u8>> for RequestBody {
    fn from(bytes: Vec<u8>) -> Self {
        RequestBody::new(vec![Bytes::from(bytes)])
    }
}

/// One attempt's view of the chunks; its exact size hint becomes the
/// Content-Length, so servers see an ordinary (not chunked) request.
struct Chunks {
    queue: VecDeque<Bytes>,
    remaining: u64,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.queue.pop_front().map(|chunk| {
            self.remaining -= chunk.len() as u64;
            Ok(Frame::data(chunk))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.queue.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn chunks_arrive_whole_in_order_with_an_exact_length() {
        let shared = Bytes::from_static(b"\"data:image/png;base64,AAAA\"");
        let body = RequestBody::new(vec![
            Bytes::from_static(b"{\"a\":"),
            shared.clone(),
            Bytes::new(),
            Bytes::from_static(b",\"b\":"),
            shared,
            Bytes::from_static(b"}"),
        ]);
        assert_eq!(body.len(), body.to_vec().len() as u64);
        let mut chunks = Chunks {
            queue: body.chunks.iter().cloned().collect(),
            remaining: body.len(),
        };
        assert_eq!(
            hyper::body::Body::size_hint(&chunks).exact(),
            Some(body.len())
        );
        let mut joined = Vec::new();
        while let Some(frame) = chunks.frame().await {
            joined.extend_from_slice(&frame.unwrap().into_data().unwrap());
            assert_eq!(
                hyper::body::Body::size_hint(&chunks).exact(),
                Some(body.len() - joined.len() as u64)
            );
        }
        assert!(hyper::body::Body::is_end_stream(&chunks));
        assert_eq!(joined, body.to_vec());
        let text = String::from_utf8(joined).unwrap();
        assert_eq!(
            text,
            r#"{"a":"data:image/png;base64,AAAA","b":"data:image/png;base64,AAAA"}"#
        );
    }
}
