//! Plaintext HTTP/1.x request heads passed up to the agent, which reads the
//! calls (method, path, Host) each workload makes.
//!
//! A TCP payload that begins with a method token and a space is a request's
//! first bytes: a client sends it (egress), a server receives it (ingress),
//! so a request is seen from whichever end's node runs the agent. The head
//! goes to the `HTTP_EVENTS` ring, cut at `HTTP_HEAD_BYTES`; the agent
//! checks the request line before believing it.
//!
//! Cost on the established fast path: each socket direction decides once,
//! on its first payload, whether it carries requests; one that does not
//! (a database, TLS, responses) is never looked at again. One that does is
//! looked at on each payload, and passes up at most
//! `HTTP_HEADS_PER_INTERVAL` heads per fold interval; the rest are counted.

use core::ptr;

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::SkBuffContext};
use netflow_common::{
    DIR_EGRESS, Drop, FlowKey, HTTP_HEAD_BYTES, HTTP_HEADS_PER_INTERVAL, HTTP_NOT_REQUESTS,
    HTTP_REQUESTS, HTTP_UNDECIDED, HttpEvent, SocketCounts,
};

use crate::maps::{HTTP_EVENTS, count_drop};

/// 1: pass request heads up; 0: never look at payloads (set by the agent
/// at load time, read-only after: the verifier prunes what it turns off).
#[unsafe(no_mangle)]
static HTTP_HEADS: u8 = 1;

/// Whether request heads are passed up at all.
#[inline(always)]
pub fn enabled() -> bool {
    unsafe { ptr::read_volatile(&HTTP_HEADS) != 0 }
}

/// What a payload's first bytes say.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Begins {
    /// A method the agent knows, then a space.
    Request,
    Other,
    /// Fewer than 8 bytes: nothing can be told (a request's first bytes
    /// written apart, or a small message).
    TooShort,
}

/// How the payload at `offset` begins (one 8-byte read).
#[inline(always)]
pub fn begins(ctx: &SkBuffContext, offset: u32) -> Begins {
    let Ok(head) = ctx.load::<[u8; 8]>(offset as usize) else {
        return Begins::TooShort;
    };
    let starts = |token: &[u8]| {
        let mut index = 0;
        while index < token.len() {
            if head[index] != token[index] {
                return false;
            }
            index += 1;
        }
        true
    };
    let request = match head[0] {
        b'G' => starts(b"GET "),
        b'H' => starts(b"HEAD "),
        b'P' => starts(b"POST ") || starts(b"PUT ") || starts(b"PATCH "),
        b'D' => starts(b"DELETE "),
        b'O' => starts(b"OPTIONS "),
        _ => false,
    };
    if request {
        Begins::Request
    } else {
        Begins::Other
    }
}

/// A payload on an established socket's fast path: decides the direction
/// once, then passes up the heads of its requests, sampled.
#[inline(always)]
pub fn on_socket_payload(
    ctx: &SkBuffContext,
    counts: *mut SocketCounts,
    direction: u8,
    payload_offset: u32,
) {
    let index = if direction == DIR_EGRESS { 0 } else { 1 };
    unsafe {
        let state = (*counts).http_state[index];
        if state == HTTP_NOT_REQUESTS {
            return;
        }
        match begins(ctx, payload_offset) {
            Begins::Request => {}
            // Decided on a later payload.
            Begins::TooShort => return,
            // A body's later segment (or pipelined bytes) on a request
            // direction; on an undecided one, the end of looking.
            Begins::Other => {
                if state == HTTP_UNDECIDED {
                    (*counts).http_state[index] = HTTP_NOT_REQUESTS;
                }
                return;
            }
        }
        if state == HTTP_UNDECIDED {
            (*counts).http_state[index] = HTTP_REQUESTS;
        }
        let sent = (*counts).http_sent[index];
        if sent >= HTTP_HEADS_PER_INTERVAL {
            count_drop(Drop::HttpUnsampled);
            return;
        }
        (*counts).http_sent[index] = sent + 1;
        pass_up(ctx, &(*counts).key, direction, payload_offset);
    }
}

/// Copies a request's head, with its connection, into the HTTP ring.
#[inline(always)]
pub fn pass_up(ctx: &SkBuffContext, key: &FlowKey, direction: u8, offset: u32) {
    let available = ctx.len().saturating_sub(offset);
    if available == 0 {
        return;
    }
    let len = if available as usize > HTTP_HEAD_BYTES {
        HTTP_HEAD_BYTES as u32
    } else {
        available
    };
    // The same value, in a form whose bounds the verifier can follow:
    // 1..=HTTP_HEAD_BYTES (a power of two).
    let len = ((len - 1) & (HTTP_HEAD_BYTES as u32 - 1)) + 1;
    let Some(mut entry) = HTTP_EVENTS.reserve::<HttpEvent>(0) else {
        count_drop(Drop::HttpLost);
        return;
    };
    let event = entry.as_mut_ptr();
    let loaded = unsafe {
        (*event).key = *key;
        (*event).len = len;
        (*event).direction = direction;
        (*event)._pad = [0; 3];
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            offset,
            (&raw mut (*event).head).cast(),
            len,
        )
    };
    if loaded == 0 {
        entry.submit(0);
    } else {
        entry.discard(0);
        count_drop(Drop::HttpLost);
    }
}
