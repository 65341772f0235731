//! The Control packet codec: the wire layout, and each reception check of
//! RFC 5880 §6.8.6 that needs only the packet.

use plexus_bfd::packet::{ControlPacket, DecodeError, Diag, State, LEN};

fn sample() -> ControlPacket {
    ControlPacket {
        diag: Diag::ControlDetectionTimeExpired,
        state: State::Up,
        poll: true,
        final_: false,
        cpi: true,
        demand: false,
        detect_mult: 3,
        my_discr: 0x0102_0304,
        your_discr: 0x0a0b_0c0d,
        desired_min_tx: 100_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 50_000,
    }
}

#[test]
fn layout_is_rfc_5880_section_4_1() {
    let b = sample().encode();
    let want: [u8; LEN] = [
        0x21, // version 1, diag 1
        0xe8, // state Up (3 << 6), P (0x20), C (0x08)
        3,    // detect mult
        24,   // length
        1, 2, 3, 4, // my discriminator
        0x0a, 0x0b, 0x0c, 0x0d, // your discriminator
        0x00, 0x01, 0x86, 0xa0, // 100 000 µs
        0x00, 0x04, 0x93, 0xe0, // 300 000 µs
        0x00, 0x00, 0xc3, 0x50, // 50 000 µs
    ];
    assert_eq!(b, want);
    assert_eq!(ControlPacket::decode(&b), Ok(sample()));
}

#[test]
fn every_state_and_flag_round_trips() {
    for state in [State::AdminDown, State::Down, State::Init, State::Up] {
        for (poll, final_) in [(false, false), (true, false), (false, true)] {
            for demand in [false, true] {
                let p = ControlPacket {
                    state,
                    poll,
                    final_,
                    demand,
                    ..sample()
                };
                assert_eq!(ControlPacket::decode(&p.encode()), Ok(p), "{p:?}");
            }
        }
    }
}

#[test]
fn diagnostics_keep_their_codes_reserved_ones_included() {
    for code in 0..32u8 {
        let d = Diag::from_code(code);
        assert_eq!(d.code(), code);
        let p = ControlPacket {
            diag: d,
            ..sample()
        };
        assert_eq!(ControlPacket::decode(&p.encode()).unwrap().diag, d);
    }
    assert_eq!(Diag::from_code(3), Diag::NeighborSignaledDown);
    assert_eq!(Diag::from_code(9), Diag::Reserved(9));
}

fn bytes() -> Vec<u8> {
    sample().encode().to_vec()
}

fn decode(b: &[u8]) -> Result<ControlPacket, DecodeError> {
    ControlPacket::decode(b)
}

#[test]
fn wrong_versions_are_refused() {
    for v in [0u8, 2, 7] {
        let mut b = bytes();
        b[0] = (v << 5) | 1;
        assert_eq!(decode(&b), Err(DecodeError::Version(v)));
    }
    // Checked before the length: a short packet of another version says so.
    assert_eq!(decode(&[0x40]), Err(DecodeError::Version(2)));
}

#[test]
fn short_datagrams_and_bad_lengths_are_refused() {
    assert_eq!(decode(&[]), Err(DecodeError::Truncated(0)));
    assert_eq!(decode(&bytes()[..23]), Err(DecodeError::Truncated(23)));
    let mut b = bytes();
    b[3] = 23;
    assert_eq!(decode(&b), Err(DecodeError::LengthTooSmall(23)));
    let mut b = bytes();
    b[3] = 25;
    assert_eq!(
        decode(&b),
        Err(DecodeError::LengthTooLarge {
            field: 25,
            datagram: 24
        })
    );
    // Bytes past the length field's end are not ours to judge.
    let mut b = bytes();
    b.extend([0xff; 8]);
    assert_eq!(decode(&b), Ok(sample()));
}

#[test]
fn detect_mult_zero_multipoint_and_zero_my_discr_are_refused() {
    let mut b = bytes();
    b[2] = 0;
    assert_eq!(decode(&b), Err(DecodeError::ZeroDetectMult));
    let mut b = bytes();
    b[1] |= 0x01;
    assert_eq!(decode(&b), Err(DecodeError::Multipoint));
    let mut b = bytes();
    b[4..8].fill(0);
    assert_eq!(decode(&b), Err(DecodeError::ZeroMyDiscr));
}

#[test]
fn zero_your_discr_only_in_down_and_admin_down() {
    for (state, ok) in [
        (State::AdminDown, true),
        (State::Down, true),
        (State::Init, false),
        (State::Up, false),
    ] {
        let p = ControlPacket {
            state,
            your_discr: 0,
            ..sample()
        };
        let r = decode(&p.encode());
        if ok {
            assert_eq!(r, Ok(p));
        } else {
            assert_eq!(r, Err(DecodeError::ZeroYourDiscr(state)));
        }
    }
}

#[test]
fn authenticated_packets_are_refused() {
    // The A bit with an authentication section (type 1, length 2+...).
    let mut b = bytes();
    b[1] |= 0x04;
    b[3] = 26;
    b.extend([1, 2]);
    assert_eq!(decode(&b), Err(DecodeError::Authenticated));
    // The A bit with no room for the section is a length error first.
    let mut b = bytes();
    b[1] |= 0x04;
    assert_eq!(decode(&b), Err(DecodeError::LengthTooSmall(24)));
}

#[test]
fn poll_and_final_together_are_refused() {
    let mut b = bytes();
    b[1] |= 0x10;
    assert_eq!(decode(&b), Err(DecodeError::PollAndFinal));
}
