//! Recording kernels and moving bytes. Kernels go into one command encoder,
//! submitted only when the host needs data back (a read) or writes data in
//! (an upload must not overtake kernels recorded before it).

use std::num::NonZeroU64;

use wgpu::util::DeviceExt;

use super::ops::Kernel;
use super::{unsupported, WgpuBackend};
use crate::backend::TensorRef;
use crate::error::{Error, Result};

/// A binding of a dispatch: a tensor (its range of a segment buffer) or a
/// whole scratch buffer.
pub(super) enum Bind<'a> {
    T(&'a TensorRef),
    B(&'a wgpu::Buffer),
}

/// Workgroups of 64 threads covering `n` items, as a 2-D grid once one
/// dimension would pass 65535 (`flat` in common.wgsl undoes it).
pub(super) fn groups_1d(n: usize) -> (u32, u32, u32) {
    let wg = n.div_ceil(64).max(1);
    let x = wg.min(65535);
    (x as u32, wg.div_ceil(x) as u32, 1)
}

/// A size or index as a parameter word.
pub(super) fn u(x: usize) -> u32 {
    x as u32
}

/// A float as a parameter word: its f32 bits (`pf` in common.wgsl).
pub(super) fn f(x: f64) -> u32 {
    (x as f32).to_bits()
}

impl WgpuBackend {
    /// Records kernel `k` in the current variant with up to 16 parameter words
    /// (binding 0) and `binds`, over `groups` workgroups.
    pub(super) fn dispatch(
        &mut self,
        k: Kernel,
        params: &[u32],
        binds: &[(u32, Bind)],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let pipeline = self.pipeline(k)?;
        let mut words = [0u32; 16];
        words[..params.len()].copy_from_slice(params);
        let pbuf = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let buffers = self
            .buffers
            .lock()
            .map_err(|_| Error::Internal("buffer table poisoned".into()))?;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: pbuf.as_entire_binding(),
        }];
        for (binding, b) in binds {
            let resource = match b {
                Bind::T(t) => {
                    let size = t.byte_size().max(4).div_ceil(4) * 4;
                    if size > self.max_binding {
                        return Err(unsupported(format!(
                            "a {size}-byte tensor (the adapter binds at most {} bytes at once)",
                            self.max_binding
                        )));
                    }
                    let buf = buffers
                        .get(t.block.handle)
                        .ok_or_else(|| Error::Internal(format!("no buffer {}", t.block.handle)))?;
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: buf,
                        offset: t.block.offset,
                        size: NonZeroU64::new(size),
                    })
                }
                Bind::B(buf) => buf.as_entire_binding(),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource,
            });
        }
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        drop(buffers);
        let device = &self.device;
        let enc = self
            .encoder
            .get_or_insert_with(|| device.create_command_encoder(&Default::default()));
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        Ok(())
    }

    /// Submits what has been recorded.
    pub(super) fn flush(&mut self) {
        if let Some(enc) = self.encoder.take() {
            self.queue.submit([enc.finish()]);
        }
    }

    /// `bytes` of `buf` from `offset`, once every kernel recorded so far has run.
    pub(super) fn read_buffer(
        &mut self,
        buf: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        let size = bytes.max(4).div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let device = &self.device;
        let enc = self
            .encoder
            .get_or_insert_with(|| device.create_command_encoder(&Default::default()));
        enc.copy_buffer_to_buffer(buf, offset, &staging, 0, size);
        self.flush();
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Internal(format!("wgpu poll: {e}")))?;
        rx.recv()
            .map_err(|e| Error::Internal(format!("wgpu map: {e}")))?
            .map_err(|e| Error::Internal(format!("wgpu map: {e}")))?;
        let mut out = slice
            .get_mapped_range()
            .map_err(|e| Error::Internal(format!("wgpu map: {e:?}")))?
            .to_vec();
        staging.unmap();
        out.truncate(bytes as usize);
        Ok(out)
    }

    /// `data` into `dst`.
    pub(super) fn write_tensor(&mut self, dst: &TensorRef, data: &[u8]) -> Result<()> {
        // Kernels recorded earlier may still read this memory: submit them first,
        // since queue writes run before the next submission's commands.
        self.flush();
        let buffers = self
            .buffers
            .lock()
            .map_err(|_| Error::Internal("buffer table poisoned".into()))?;
        let buf = buffers
            .get(dst.block.handle)
            .ok_or_else(|| Error::Internal(format!("no buffer {}", dst.block.handle)))?;
        if data.len() % 4 == 0 {
            self.queue.write_buffer(buf, dst.block.offset, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().div_ceil(4) * 4, 0);
            self.queue.write_buffer(buf, dst.block.offset, &padded);
        }
        Ok(())
    }

    /// The bytes of `src`, once every kernel recorded so far has run.
    pub(super) fn read_tensor(&mut self, src: &TensorRef) -> Result<Vec<u8>> {
        let buf = {
            let buffers = self
                .buffers
                .lock()
                .map_err(|_| Error::Internal("buffer table poisoned".into()))?;
            buffers
                .get(src.block.handle)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("no buffer {}", src.block.handle)))?
        };
        self.read_buffer(&buf, src.block.offset, src.byte_size())
    }
}
