pub mod attrs;
pub mod codec;
pub mod fsm;
