//! wgpu buffers as raw memory: each segment is one storage buffer; blocks are
//! ranges of it, bound with their offset (a multiple of 512, the allocator's
//! rounding, which covers every adapter's storage offset alignment).

use std::sync::{Arc, Mutex};

use crate::memory::{DeviceOutOfMemory, RawMemory, Segment};

/// Buffers by handle, shared by the memory (which creates them) and the backend
/// (which binds them).
#[derive(Default)]
pub struct Buffers {
    slots: Vec<Option<wgpu::Buffer>>,
    vacant: Vec<usize>,
}

impl Buffers {
    pub fn get(&self, handle: u64) -> Option<&wgpu::Buffer> {
        self.slots.get(handle as usize).and_then(|b| b.as_ref())
    }
}

/// wgpu storage buffers as raw device memory, one buffer per segment. wgpu
/// reports no device memory size, so the total is `HEADROOM_WGPU_MEMORY` bytes
/// when set, else the host's memory.
pub struct WgpuMemory {
    pub(super) device: wgpu::Device,
    pub(super) buffers: Arc<Mutex<Buffers>>,
    pub(super) max_buffer: u64,
    pub(super) total: u64,
    pub(super) used: u64,
}

impl RawMemory for WgpuMemory {
    fn alloc(&mut self, bytes: u64) -> Result<Segment, DeviceOutOfMemory> {
        let oom = DeviceOutOfMemory { requested: bytes };
        let size = bytes.max(4).div_ceil(4) * 4;
        if size > self.max_buffer || self.used + size > self.total {
            return Err(oom);
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("headroom segment"),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if pollster::block_on(scope.pop()).is_some() {
            return Err(oom);
        }
        let mut b = self.buffers.lock().map_err(|_| oom)?;
        let handle = match b.vacant.pop() {
            Some(i) => {
                b.slots[i] = Some(buf);
                i
            }
            None => {
                b.slots.push(Some(buf));
                b.slots.len() - 1
            }
        };
        self.used += size;
        Ok(Segment {
            handle: handle as u64,
            bytes,
        })
    }

    fn free(&mut self, seg: Segment) {
        if let Ok(mut b) = self.buffers.lock() {
            // Dropping (not destroying) the buffer: commands recorded but not yet
            // submitted keep it alive until they finish.
            if let Some(slot) = b.slots.get_mut(seg.handle as usize) {
                if slot.take().is_some() {
                    b.vacant.push(seg.handle as usize);
                    self.used -= seg.bytes.max(4).div_ceil(4) * 4;
                }
            }
        }
    }

    fn total_bytes(&self) -> u64 {
        self.total
    }

    fn free_bytes(&self) -> u64 {
        self.total.saturating_sub(self.used)
    }
}
