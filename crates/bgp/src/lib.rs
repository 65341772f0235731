pub mod attrs;
pub mod codec;
pub mod decision;
pub mod rib;
pub mod fsm;
