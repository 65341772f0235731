pub mod attrs;
pub mod codec;
pub mod decision;
pub mod error;
pub mod fsm;
pub mod rib;
pub mod speaker;
