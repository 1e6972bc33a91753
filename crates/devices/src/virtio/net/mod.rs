//! virtio-net (to come).
