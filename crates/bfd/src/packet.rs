//! The BFD Control packet (RFC 5880 §4.1) and the checks of §6.8.6 that
//! need nothing but the packet itself. Session selection (discriminators,
//! addresses) and GTSM are [`crate::sessions`]' job.
//!
//! We do not implement authentication, so a packet with the A bit set is
//! refused here ([`DecodeError::Authenticated`]), as §6.8.6 says for a
//! session whose bfd.AuthType is zero; we never send the A, D or M bits.

use std::fmt;

/// The only version RFC 5880 defines.
pub const VERSION: u8 = 1;
/// Length of a Control packet without an authentication section.
pub const LEN: usize = 24;
/// The smallest valid length with the A bit set (the auth type and length
/// octets of the authentication section).
pub const MIN_LEN_AUTH: usize = 26;

const FLAG_P: u8 = 0x20;
const FLAG_F: u8 = 0x10;
const FLAG_C: u8 = 0x08;
const FLAG_A: u8 = 0x04;
const FLAG_D: u8 = 0x02;
const FLAG_M: u8 = 0x01;

/// Session states (§4.1 "Sta").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Diagnostic codes (§4.1 "Diag"): why the sender's session last changed
/// state. Values 9–31 are reserved; a peer sending one is not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Diag {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    Reserved(u8),
}

impl Diag {
    pub fn from_code(c: u8) -> Diag {
        match c & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            n => Diag::Reserved(n),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(n) => n & 0x1f,
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Diag::None => "no diagnostic",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdministrativelyDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Reserved(n) => return write!(f, "reserved diagnostic {n}"),
        };
        f.write_str(s)
    }
}

/// A Control packet without authentication. Intervals are in microseconds,
/// as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: State,
    pub poll: bool,
    pub final_: bool,
    /// Control Plane Independent: the sender's BFD does not share fate with
    /// its control plane. Ours runs in plexusd, so we send it clear.
    pub cpi: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    pub desired_min_tx: u32,
    pub required_min_rx: u32,
    pub required_min_echo_rx: u32,
}

/// Why a datagram is not a Control packet we accept (RFC 5880 §6.8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {0} bytes is shorter than a BFD Control packet")]
    Truncated(usize),
    #[error("BFD version {0} (only 1 exists)")]
    Version(u8),
    #[error("length field {0} is below the minimum")]
    LengthTooSmall(u8),
    #[error("length field {field} exceeds the {datagram}-byte datagram")]
    LengthTooLarge { field: u8, datagram: usize },
    #[error("detect multiplier is zero")]
    ZeroDetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator is zero")]
    ZeroMyDiscr,
    #[error("your discriminator is zero in state {0}")]
    ZeroYourDiscr(State),
    #[error("authentication present (not implemented)")]
    Authenticated,
    #[error("poll and final bits both set")]
    PollAndFinal,
}

impl ControlPacket {
    /// Decode and check one datagram's payload.
    pub fn decode(buf: &[u8]) -> Result<ControlPacket, DecodeError> {
        // The version is checked first (§6.8.6's order), so a future version
        // with a shorter packet is reported as what it is.
        let Some(&b0) = buf.first() else {
            return Err(DecodeError::Truncated(0));
        };
        let version = b0 >> 5;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        if buf.len() < LEN {
            return Err(DecodeError::Truncated(buf.len()));
        }
        let flags = buf[1];
        let length = buf[3];
        let auth = flags & FLAG_A != 0;
        let min = if auth { MIN_LEN_AUTH } else { LEN };
        if usize::from(length) < min {
            return Err(DecodeError::LengthTooSmall(length));
        }
        if usize::from(length) > buf.len() {
            return Err(DecodeError::LengthTooLarge {
                field: length,
                datagram: buf.len(),
            });
        }
        let detect_mult = buf[2];
        if detect_mult == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        if flags & FLAG_M != 0 {
            return Err(DecodeError::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let my_discr = word(4);
        if my_discr == 0 {
            return Err(DecodeError::ZeroMyDiscr);
        }
        let your_discr = word(8);
        let state = State::from_bits(flags >> 6);
        if your_discr == 0 && !matches!(state, State::Down | State::AdminDown) {
            return Err(DecodeError::ZeroYourDiscr(state));
        }
        if auth {
            return Err(DecodeError::Authenticated);
        }
        let poll = flags & FLAG_P != 0;
        let final_ = flags & FLAG_F != 0;
        if poll && final_ {
            return Err(DecodeError::PollAndFinal);
        }
        Ok(ControlPacket {
            diag: Diag::from_code(b0),
            state,
            poll,
            final_,
            cpi: flags & FLAG_C != 0,
            demand: flags & FLAG_D != 0,
            detect_mult,
            my_discr,
            your_discr,
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
        })
    }

    /// The 24 bytes on the wire (no authentication section).
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (VERSION << 5) | self.diag.code();
        let mut flags = self.state.bits() << 6;
        for (set, bit) in [
            (self.poll, FLAG_P),
            (self.final_, FLAG_F),
            (self.cpi, FLAG_C),
            (self.demand, FLAG_D),
        ] {
            if set {
                flags |= bit;
            }
        }
        b[1] = flags;
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        for (i, w) in [
            self.my_discr,
            self.your_discr,
            self.desired_min_tx,
            self.required_min_rx,
            self.required_min_echo_rx,
        ]
        .into_iter()
        .enumerate()
        {
            b[4 + 4 * i..8 + 4 * i].copy_from_slice(&w.to_be_bytes());
        }
        b
    }
}
