//! The XDP object's programs, and the jump table (`JUMPS`) the entry
//! program continues in.

/// Name of the XDP program in the object (the one attached).
pub const PROGRAM_NAME: &str = "veer_xdp";
/// The TC egress program that sends a VIP-path health check to its
/// backend's MAC (veerd attaches it only when a service asks for one).
pub const VIP_PATH_PROGRAM: &str = "veer_vip_path";
/// The program for a NAT service's packets, at `JUMP_NAT` in `JUMPS`.
pub const NAT_PROGRAM: &str = "veer_nat";
/// The program for backends' answers to NAT flows, at `JUMP_NAT_RETURN`.
pub const NAT_RETURN_PROGRAM: &str = "veer_nat_return";
/// `JUMPS` slot of [`NAT_PROGRAM`].
pub const JUMP_NAT: u32 = 0;
/// `JUMPS` slot of [`NAT_RETURN_PROGRAM`].
pub const JUMP_NAT_RETURN: u32 = 1;
/// ICMP errors about NAT packets toward backends, on to clients (IPv4).
pub const JUMP_NAT_ICMP_CLIENT4: u32 = 2;
/// The same for IPv6.
pub const JUMP_NAT_ICMP_CLIENT6: u32 = 3;
/// ICMP errors about NAT answers toward clients, on to backends (IPv4).
pub const JUMP_NAT_ICMP_BACKEND4: u32 = 4;
/// The same for IPv6.
pub const JUMP_NAT_ICMP_BACKEND6: u32 = 5;
/// The programs of the ICMP slots, by slot.
pub const NAT_ICMP_PROGRAMS: [(u32, &str); 4] = [
    (JUMP_NAT_ICMP_CLIENT4, "veer_nat_icmp_client4"),
    (JUMP_NAT_ICMP_CLIENT6, "veer_nat_icmp_client6"),
    (JUMP_NAT_ICMP_BACKEND4, "veer_nat_icmp_backend4"),
    (JUMP_NAT_ICMP_BACKEND6, "veer_nat_icmp_backend6"),
];
/// A NAT service's SYN answered with a SYN cookie, or a TCP packet for no
/// NAT flow (maybe an ACK carrying one), at `JUMP_NAT_COOKIE`.
pub const NAT_COOKIE_PROGRAM: &str = "veer_nat_cookie";
/// `JUMPS` slot of [`NAT_COOKIE_PROGRAM`].
pub const JUMP_NAT_COOKIE: u32 = 6;
/// A backend's packet to a NAT connection veer's SYN proxy opened, at
/// `JUMP_NAT_COOKIE_RETURN`.
pub const NAT_COOKIE_RETURN_PROGRAM: &str = "veer_nat_cookie_return";
/// `JUMPS` slot of [`NAT_COOKIE_RETURN_PROGRAM`].
pub const JUMP_NAT_COOKIE_RETURN: u32 = 7;
/// A DSR packet its flow's backend bounced back (veer-agent), for its
/// second chance, at `JUMP_SECOND_CHANCE`.
pub const SECOND_CHANCE_PROGRAM: &str = "veer_second_chance";
/// `JUMPS` slot of [`SECOND_CHANCE_PROGRAM`].
pub const JUMP_SECOND_CHANCE: u32 = 8;
/// A packet a tunnelled backend's agent sent back through its tunnel,
/// taken out of it and balanced, at `JUMP_TUNNEL_RETURN`.
pub const TUNNEL_RETURN_PROGRAM: &str = "veer_tunnel_return";
/// `JUMPS` slot of [`TUNNEL_RETURN_PROGRAM`].
pub const JUMP_TUNNEL_RETURN: u32 = 9;
/// Slots in `JUMPS`.
pub const JUMP_SLOTS: u32 = 10;
