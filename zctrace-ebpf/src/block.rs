//! Block requests: device DMA, attributed at issue time to the thread that
//! issued them (writeback runs in kernel threads: their bytes are in the
//! ledger as unattributed).

use aya_ebpf::programs::RawTracePointContext;
use zctrace_common::counter;

use crate::{
    kernel::{layout, read},
    state::{charge, current_traced},
};

/// `REQ_OP_MASK`, `REQ_OP_READ`, `REQ_OP_WRITE` (include/linux/blk_types.h).
const REQ_OP_MASK: u32 = 0xff;
const REQ_OP_READ: u32 = 0;
const REQ_OP_WRITE: u32 = 1;

/// `block_rq_issue(rq)`.
pub fn try_rq_issue(ctx: &RawTracePointContext) -> Result<(), ()> {
    let rq = ctx.arg::<u64>(0);
    let len: u32 = read(rq, layout!(request_data_len)).ok_or(())?;
    let op: u32 = read::<u32>(rq, layout!(request_cmd_flags)).ok_or(())? & REQ_OP_MASK;
    let idx = match op {
        REQ_OP_READ => counter::DISK_READ_BYTES,
        REQ_OP_WRITE => counter::DISK_WRITE_BYTES,
        _ => return Ok(()),
    };
    charge(current_traced(), idx, len as u64, false);
    Ok(())
}
