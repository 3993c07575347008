//! Compressed response bodies (`Content-Encoding: gzip`, `x-gzip` or `br`), decoded in small
//! steps for both clients, so a small compressed body cannot expand into a large one before the
//! caller's size limit sees it. Brotli's decoder also keeps its window as it goes: at most
//! 16 MiB (RFC 7932; streams declaring the larger windows of later extensions are refused).

use std::io::Write;

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, StandardAlloc};
use bytes::{Buf, Bytes};
use http::HeaderValue;

use super::FetchError;

/// The `Accept-Encoding` both clients send.
pub(super) const ACCEPT_ENCODINGS: &str = "gzip, br";

/// Compressed bytes fed to the gzip decoder at a time (deflate expands at most about 1,000 to 1).
const GUNZIP_STEP: usize = 1024;

/// Decoded bytes a brotli step yields at most (brotli has no useful bound on expansion, so the
/// step is bounded by its output). The decoder's own window is RFC 7932's, at most 16 MiB:
/// streams declaring the large windows of later extensions are refused.
const BROTLI_STEP: usize = 16 * 1024;

/// A compressed body being decoded.
pub(super) struct Decode {
    codec: Codec,
    pending: Bytes,
    /// Some compressed bytes were fed (an empty body decodes to an empty one).
    fed: bool,
    /// The compressed stream has ended: what follows it is not read.
    ended: bool,
    done: bool,
}

// The whole decoder is boxed once per compressed response; brotli's state (3.6 KB) is boxed
// again so that a gzip decoder does not carry its size.
#[allow(clippy::large_enum_variant)]
enum Codec {
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Brotli(Box<Brotli>),
}

struct Brotli {
    state: brotli_decompressor::BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    out: Vec<u8>,
    total: usize,
}

impl Decode {
    /// The decoder for a response's `Content-Encoding`, if it is one this client asks for.
    pub(super) fn for_encoding(value: &HeaderValue) -> Option<Box<Decode>> {
        let codec = match value.as_bytes() {
            // `x-gzip` is gzip (RFC 9110, 8.4.1.3); old servers still send it.
            v if v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip") => {
                Codec::Gzip(flate2::write::GzDecoder::new(Vec::new()))
            }
            v if v.eq_ignore_ascii_case(b"br") => Codec::Brotli(Box::new(Brotli {
                state: brotli_decompressor::BrotliState::new_strict(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                ),
                out: vec![0; BROTLI_STEP],
                total: 0,
            })),
            _ => return None,
        };
        Some(Box::new(Decode { codec, pending: Bytes::new(), fed: false, ended: false, done: false }))
    }
}

impl Decode {
    /// Decodes the next step of what is pending: `None` when it is all decoded, and then the
    /// next frame is wanted unless [`Decode::done`].
    pub(super) fn step(&mut self) -> Result<Option<Bytes>, FetchError> {
        let out = match &mut self.codec {
            Codec::Gzip(decoder) => gunzip_step(decoder, &mut self.pending, &mut self.fed, &mut self.ended)?,
            Codec::Brotli(b) => b.step(&mut self.pending, &mut self.fed, &mut self.ended)?,
        };
        if out.is_none() && self.ended {
            self.pending = Bytes::new();
        }
        Ok(out)
    }

    /// The whole body has been decoded.
    pub(super) fn done(&self) -> bool {
        self.done
    }

    /// Takes the body's next frame as sent (`None`: the body has ended). `false` when the frame
    /// holds bytes after the compressed stream: the body ends there, its rest is not read, and
    /// its connection is not to be used again.
    pub(super) fn frame(&mut self, data: Option<Bytes>) -> Result<bool, FetchError> {
        debug_assert!(self.pending.is_empty(), "a frame before the last was decoded");
        match data {
            None => self.finish().map(|()| true),
            Some(d) if self.ended && !d.is_empty() => self.finish().map(|()| false),
            Some(_) if self.ended => Ok(true),
            Some(d) => {
                self.pending = d;
                Ok(true)
            }
        }
    }

    /// The body has ended: the stream must be complete (gzip's checksum and length are
    /// checked), unless the body was empty.
    fn finish(&mut self) -> Result<(), FetchError> {
        if self.fed {
            match &mut self.codec {
                Codec::Gzip(decoder) => decoder.try_finish().map_err(|e| decode_error("gzip", e))?,
                Codec::Brotli(_) if !self.ended => {
                    return Err(decode_error("brotli", "the stream ends before its end"))
                }
                Codec::Brotli(_) => {}
            }
        }
        self.done = true;
        Ok(())
    }
}

fn gunzip_step(
    decoder: &mut flate2::write::GzDecoder<Vec<u8>>,
    pending: &mut Bytes,
    fed: &mut bool,
    ended: &mut bool,
) -> Result<Option<Bytes>, FetchError> {
    while !pending.is_empty() && !*ended {
        let n = pending.len().min(GUNZIP_STEP);
        let used = decoder.write(&pending[..n]).map_err(|e| decode_error("gzip", e))?;
        if used == 0 {
            *ended = true;
            break;
        }
        *fed = true;
        pending.advance(used);
        let out = std::mem::take(decoder.get_mut());
        if !out.is_empty() {
            return Ok(Some(out.into()));
        }
    }
    let out = std::mem::take(decoder.get_mut());
    Ok((!out.is_empty()).then(|| out.into()))
}

impl Brotli {
    /// At most [`BROTLI_STEP`] decoded bytes of what is pending (and of what the decoder holds).
    fn step(
        &mut self,
        pending: &mut Bytes,
        fed: &mut bool,
        ended: &mut bool,
    ) -> Result<Option<Bytes>, FetchError> {
        while !*ended {
            let (mut avail_in, mut in_at) = (pending.len(), 0);
            let (mut avail_out, mut out_at) = (self.out.len(), 0);
            let result = BrotliDecompressStream(
                &mut avail_in,
                &mut in_at,
                pending,
                &mut avail_out,
                &mut out_at,
                &mut self.out,
                &mut self.total,
                &mut self.state,
            );
            if in_at > 0 {
                *fed = true;
                pending.advance(in_at);
            }
            let more_out = match result {
                BrotliResult::ResultFailure => {
                    return Err(decode_error("brotli", format!("{:?}", self.state.error_code)))
                }
                BrotliResult::ResultSuccess => {
                    *ended = true;
                    false
                }
                BrotliResult::NeedsMoreOutput => true,
                BrotliResult::NeedsMoreInput => false,
            };
            if out_at > 0 {
                return Ok(Some(Bytes::copy_from_slice(&self.out[..out_at])));
            }
            if !more_out {
                break;
            }
        }
        Ok(None)
    }
}

fn decode_error(codec: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Network(format!("{codec}: {e}"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `data` brotli-compressed (quality 5, a 4 MiB window).
    pub(in super::super) fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
        drop(w);
        out
    }

    /// `data` brotli-compressed with a window of 64 MiB (the large-window extension, not
    /// RFC 7932's brotli).
    pub(in super::super) fn brotli_large_window(data: &[u8]) -> Vec<u8> {
        let params = brotli::enc::BrotliEncoderParams { large_window: true, lgwin: 26, ..Default::default() };
        let mut out = Vec::new();
        brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
        out
    }

    /// Drives a decoder as the clients do: steps until none is left, then the next frame.
    fn decode_all(d: &mut Decode, frames: Vec<Option<Bytes>>, bound: usize) -> Result<Vec<u8>, FetchError> {
        let mut frames = frames.into_iter();
        let mut out = Vec::new();
        loop {
            if let Some(chunk) = d.step()? {
                assert!(chunk.len() <= bound, "a step of {} bytes", chunk.len());
                out.extend_from_slice(&chunk);
                continue;
            }
            if d.done() {
                return Ok(out);
            }
            d.frame(frames.next().expect("a frame after the last"))?;
        }
    }

    #[test]
    fn every_step_yields_a_bounded_share_of_a_large_body() {
        let page = b"<p>0123456789</p>".repeat(200_000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&page).unwrap();
        let gz = gz.finish().unwrap();
        // Each codec's whole body in one frame: 3.4 MB decoded from a few KB.
        for (encoding, body, bound) in [("gzip", gz, 64 * 1024), ("br", brotli(&page), BROTLI_STEP)] {
            let mut d = Decode::for_encoding(&HeaderValue::from_static(encoding)).unwrap();
            let out = decode_all(&mut d, vec![Some(body.into()), None], bound).unwrap();
            assert!(out == page, "{encoding}: {} bytes", out.len());
        }
    }

    #[test]
    fn bytes_after_the_stream_end_the_body_and_a_short_stream_is_an_error() {
        let mut d = Decode::for_encoding(&HeaderValue::from_static("br")).unwrap();
        assert!(d.frame(Some(brotli(b"<p>x</p>").into())).unwrap());
        assert_eq!(d.step().unwrap().as_deref(), Some(&b"<p>x</p>"[..]));
        assert_eq!(d.step().unwrap(), None);
        assert!(!d.done());
        assert!(d.frame(Some(Bytes::new())).unwrap(), "an empty frame changes nothing");
        assert!(!d.frame(Some("more".into())).unwrap(), "the rest is not to be read");
        assert!(d.done());

        let stream = brotli(&b"<p>0123456789</p>".repeat(1000));
        let mut d = Decode::for_encoding(&HeaderValue::from_static("br")).unwrap();
        assert!(d.frame(Some(Bytes::copy_from_slice(&stream[..stream.len() - 3]))).unwrap());
        while d.step().unwrap().is_some() {}
        match d.frame(None) {
            Err(FetchError::Network(m)) => assert!(m.starts_with("brotli: "), "{m}"),
            other => panic!("expected a brotli error, got {other:?}"),
        }
        assert!(Decode::for_encoding(&HeaderValue::from_static("deflate")).is_none());
    }
}
