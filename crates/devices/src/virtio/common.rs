//! The common configuration structure (virtio spec 4.1.4.3): feature
//! negotiation, device status, queue set-up; and what DRIVER_OK and reset do.
//!
//! ```text
//! 0x00 device_feature_select  0x04 device_feature   0x08 driver_feature_select
//! 0x0c driver_feature         0x10 config_msix_vector  0x12 num_queues
//! 0x14 device_status          0x15 config_generation   0x16 queue_select
//! 0x18 queue_size             0x1a queue_msix_vector   0x1c queue_enable
//! 0x1e queue_notify_off       0x20 queue_desc  0x28 queue_driver  0x30 queue_device
//! ```
//!
//! Accesses of the wrong size or alignment are ignored (reads give zero).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::interrupt::{Interrupt, NO_VECTOR};
use super::pci::VirtioPci;
use super::{status, Activation, Queue, QueueT, F_RING_EVENT_IDX, F_VERSION_1};

impl VirtioPci {
    fn selected_queue(&self) -> Option<usize> {
        let q = usize::from(self.queue_select);
        (q < self.queues.len()).then_some(q)
    }

    fn device_status(&self) -> u8 {
        let mut s = self.status;
        if self.shared.needs_reset.load(Ordering::SeqCst) {
            s |= status::NEEDS_RESET;
        }
        s
    }

    /// The structure as the guest would see it now.
    fn common_image(&self) -> [u8; 0x38] {
        let mut b = [0u8; 0x38];
        let put = |b: &mut [u8; 0x38], at: usize, v: &[u8]| {
            b[at..at + v.len()].copy_from_slice(v);
        };
        let features = self.device.features();
        let dfeat = match self.device_feature_select {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        };
        let drv = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        put(&mut b, 0x00, &self.device_feature_select.to_le_bytes());
        put(&mut b, 0x04, &dfeat.to_le_bytes());
        put(&mut b, 0x08, &self.driver_feature_select.to_le_bytes());
        put(&mut b, 0x0c, &drv.to_le_bytes());
        put(&mut b, 0x10, &self.config_vector.to_le_bytes());
        put(&mut b, 0x12, &(self.queues.len() as u16).to_le_bytes());
        b[0x14] = self.device_status();
        b[0x15] = self.config_generation;
        put(&mut b, 0x16, &self.queue_select.to_le_bytes());
        if let Some(q) = self.selected_queue() {
            let queue = &self.queues[q];
            put(&mut b, 0x18, &queue.size().to_le_bytes());
            put(&mut b, 0x1a, &self.queue_vectors[q].to_le_bytes());
            put(&mut b, 0x1c, &u16::from(queue.ready()).to_le_bytes());
            put(&mut b, 0x1e, &(q as u16).to_le_bytes());
            put(&mut b, 0x20, &queue.desc_table().to_le_bytes());
            put(&mut b, 0x28, &queue.avail_ring().to_le_bytes());
            put(&mut b, 0x30, &queue.used_ring().to_le_bytes());
        }
        b
    }

    pub(super) fn read_common(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len() as u64;
        if !matches!(len, 1 | 2 | 4 | 8) || !offset.is_multiple_of(len) {
            return;
        }
        let image = self.common_image();
        if let Some(src) = usize::try_from(offset)
            .ok()
            .and_then(|o| image.get(o..o + data.len()))
        {
            data.copy_from_slice(src);
        }
    }

    pub(super) fn write_common(&mut self, offset: u64, data: &[u8]) {
        let mut v = [0u8; 8];
        let Some(dst) = v.get_mut(..data.len()) else {
            return;
        };
        dst.copy_from_slice(data);
        let value = u64::from_le_bytes(v);
        let v32 = value as u32;
        let v16 = value as u16;
        // Queue set-up is frozen once the driver is running.
        let setup = self.status & status::DRIVER_OK == 0;
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = v32,
            (0x08, 4) => self.driver_feature_select = v32,
            (0x0c, 4) if self.status & status::FEATURES_OK == 0 => {
                match self.driver_feature_select {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(v32)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v32) << 32)
                    }
                    _ => {}
                }
            }
            // Vectors are taken at DRIVER_OK; later changes are refused.
            (0x10, 2) if setup => self.config_vector = self.checked_vector(v16),
            (0x14, 1) => self.write_status(value as u8),
            (0x16, 2) => self.queue_select = v16,
            (0x18, 2) if setup => {
                if let Some(q) = self.selected_queue() {
                    self.queues[q].set_size(v16);
                }
            }
            (0x1a, 2) if setup => {
                let vector = self.checked_vector(v16);
                if let Some(q) = self.selected_queue() {
                    self.queue_vectors[q] = vector;
                }
            }
            (0x1c, 2) if setup => {
                if let Some(q) = self.selected_queue() {
                    self.queues[q].set_ready(v16 == 1);
                }
            }
            (0x20..=0x37, 4 | 8) if setup && offset.is_multiple_of(data.len() as u64) => {
                self.write_queue_address(offset, value, data.len())
            }
            _ => {}
        }
    }

    /// A vector the function has, else NO_VECTOR (which the driver reads
    /// back as a refusal).
    fn checked_vector(&self, v: u16) -> u16 {
        if u32::from(v) < self.vector_count() {
            v
        } else {
            NO_VECTOR
        }
    }

    fn write_queue_address(&mut self, offset: u64, value: u64, len: usize) {
        let Some(q) = self.selected_queue() else {
            return;
        };
        let queue = &mut self.queues[q];
        let (low, high) = if len == 8 {
            (Some(value as u32), Some((value >> 32) as u32))
        } else if offset.is_multiple_of(8) {
            (Some(value as u32), None)
        } else {
            (None, Some(value as u32))
        };
        match offset & !7 {
            0x20 => queue.set_desc_table_address(low, high),
            0x28 => queue.set_avail_ring_address(low, high),
            0x30 => queue.set_used_ring_address(low, high),
            _ => {}
        }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        let newly = value & !self.status;
        if newly & status::FEATURES_OK != 0 {
            let offered = self.device.features();
            let ok =
                self.driver_features & !offered == 0 && self.driver_features & F_VERSION_1 != 0;
            if !ok {
                value &= !status::FEATURES_OK;
            }
        }
        self.status = value;
        if newly & status::DRIVER_OK != 0
            && value & status::FEATURES_OK != 0
            && value & status::FAILED == 0
            && !self.active
        {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & F_RING_EVENT_IDX != 0;
        let interrupt = Arc::new(
            Interrupt::new(
                self.vectors.clone(),
                self.shared.clone(),
                self.queue_vectors.clone(),
                self.config_vector,
            )
            .with_counts(self.device.queue_interrupts()),
        );
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready() {
                queues.push(None);
                continue;
            }
            if !q.is_valid(&self.mem) {
                interrupt.fail(&format!("queue {i} is not valid (size or ring addresses)"));
                return;
            }
            let evt = match self.notify_evt(i).map(|e| e.try_clone()) {
                Some(Ok(e)) => e,
                _ => {
                    interrupt.fail("cannot clone a notification eventfd");
                    return;
                }
            };
            let mut q = match Queue::try_from(q.state()) {
                Ok(q) => q,
                Err(e) => {
                    interrupt.fail(&format!("queue {i}: {e}"));
                    return;
                }
            };
            q.set_event_idx(event_idx);
            queues.push(Some((q, evt)));
        }
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            features: self.driver_features,
            interrupt: interrupt.clone(),
        };
        match self.device.activate(activation) {
            Ok(()) => self.active = true,
            Err(e) => interrupt.fail(&e.to_string()),
        }
    }

    /// Driver reset: the device stops and everything the driver set up is
    /// forgotten (MSI-X table entries are PCI state and stay).
    pub(super) fn reset(&mut self) {
        self.device.reset();
        self.active = false;
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_vectors.fill(NO_VECTOR);
        self.config_vector = NO_VECTOR;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.status = 0;
        self.shared.isr.store(0, Ordering::SeqCst);
        self.shared.needs_reset.store(false, Ordering::SeqCst);
        self.config_generation = self.config_generation.wrapping_add(1);
        // Notifications still counted in the eventfds belong to the old queues.
        for i in 0..self.queues.len() {
            if let Some(evt) = self.notify_evt(i) {
                let _ = evt.read();
            }
        }
    }
}
