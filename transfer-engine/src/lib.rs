//! transfer-engine: the delta-transfer engine of barsync (work in progress, see below).
// MODULES (keep one `pub mod` per line; transports are added by their own work)
// pub mod transport;  <- the transport work replaces this comment line with the real declaration
