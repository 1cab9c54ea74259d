//! Safetensors weights memory-mapped and copied into tensors one at a time,
//! each tensor's pages handed back to the kernel once copied: without that,
//! every page read stays mapped (and counted in the process's memory) until
//! the whole model is built, and loading peaks at twice the weights.

use std::path::PathBuf;

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

/// The checkpoint's files, mapped read-only.
pub struct ReleasingWeights {
    inner: MmapedSafetensors,
}

impl ReleasingWeights {
    /// # Safety
    ///
    /// As for every memory-mapped reader: the files must not be truncated or
    /// rewritten while they are mapped.
    pub unsafe fn open(files: &[PathBuf]) -> Result<ReleasingWeights> {
        Ok(ReleasingWeights {
            inner: unsafe { MmapedSafetensors::multi(files)? },
        })
    }
}

/// Drops the mapped pages lying wholly inside `data`; a page shared with a
/// neighbouring tensor stays. The mapping is read-only and private, so a
/// dropped page reads back from the file if it is ever touched again.
fn release(data: &[u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let Ok(page) = usize::try_from(page) else {
        return;
    };
    if page == 0 {
        return;
    }
    let start = (data.as_ptr() as usize).div_ceil(page) * page;
    let end = (data.as_ptr() as usize + data.len()) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside a live read-only file mapping and
        // no reference into it outlives this call; MADV_DONTNEED on such a
        // mapping only drops page-table entries. Failure is harmless: the
        // pages just stay resident.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Bytes copied between two releases: small beside any large tensor, large
/// enough that the system calls cost nothing.
const CHUNK: usize = 16 << 20;

/// A little-endian f32 tensor copied out of the mapping a chunk at a time,
/// each chunk's pages released once copied, so that even the largest tensor
/// (the embedding table) is never resident twice.
fn f32_in_chunks(data: &[u8], shape: &[usize], dev: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    if data.len() != n * 4 {
        candle_core::bail!("{} bytes for {n} f32 values", data.len());
    }
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let dst = out.as_mut_ptr().cast::<u8>();
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        // SAFETY: `out` has room for `n * 4` bytes and the chunks cover
        // exactly that many; any bit pattern is a valid f32.
        unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), dst.add(i * CHUNK), chunk.len()) };
        release(chunk);
    }
    // SAFETY: every one of the `n` values was written above.
    unsafe { out.set_len(n) };
    Tensor::from_vec(out, shape, dev)
}

impl SimpleBackend for ReleasingWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, dev)?;
        if tensor.shape() != &shape {
            candle_core::bail!(
                "{name}: the checkpoint holds {:?}, the config implies {:?}",
                tensor.shape().dims(),
                shape.dims()
            );
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let view = self.inner.get(name)?;
        let stored = DType::try_from(view.dtype());
        let tensor = if matches!(stored, Ok(DType::F32)) && cfg!(target_endian = "little") {
            f32_in_chunks(view.data(), view.shape(), dev)?
        } else {
            let tensor = view.load(dev)?;
            release(view.data());
            tensor
        };
        tensor.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.get(name).is_ok()
    }
}
