//! Loading the XDP object into the kernel and attaching it to interfaces.

use std::collections::HashMap as StdHashMap;

use aya::{
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use veer_abi::{
    names, JUMP_NAT, JUMP_NAT_COOKIE, JUMP_NAT_RETURN, NAT_COOKIE_PROGRAM, NAT_PROGRAM, NAT_RETURN_PROGRAM,
    PROGRAM_NAME,
};

use super::{map_layout, Dataplane, DataplaneError, DataplaneOptions, Result};

/// The XDP object veer was built with.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VEER_XDP_OBJ"));

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP in the driver (the default; fastest).
    #[default]
    Driver,
    /// Generic XDP on the skb (any interface; slower).
    Skb,
}

impl From<AttachMode> for XdpMode {
    fn from(m: AttachMode) -> Self {
        match m {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// Runs a program load `load`, again while the kernel answers `EAGAIN`
/// (up to five times, as libbpf does): the verifier gives up with it when
/// a signal is pending for the loading thread (a child process exiting, in
/// a process with a SIGCHLD handler), and a large program's verification
/// is long enough to meet one.
pub(super) fn retrying_eagain(
    mut load: impl FnMut() -> std::result::Result<(), ProgramError>,
) -> std::result::Result<(), ProgramError> {
    let mut tries = 1;
    loop {
        match load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < 5 =>
            {
                tracing::debug!(tries, "the verifier gave up with EAGAIN (a signal pending); loading again");
                tries += 1;
            }
            r => return r,
        }
    }
}

/// Loads the programs the entry program tail-calls and puts them in `JUMPS`
/// (replacing what a previous daemon put there, when the map is adopted).
fn load_continuations(ebpf: &mut Ebpf) -> Result<()> {
    use aya::maps::ProgramArray;
    let mut fds = Vec::new();
    let programs = [
        (JUMP_NAT, NAT_PROGRAM),
        (JUMP_NAT_RETURN, NAT_RETURN_PROGRAM),
        (JUMP_NAT_COOKIE, NAT_COOKIE_PROGRAM),
        (veer_abi::JUMP_NAT_COOKIE_RETURN, veer_abi::NAT_COOKIE_RETURN_PROGRAM),
        (veer_abi::JUMP_SECOND_CHANCE, veer_abi::SECOND_CHANCE_PROGRAM),
        (veer_abi::JUMP_TUNNEL_RETURN, veer_abi::TUNNEL_RETURN_PROGRAM),
    ]
    .into_iter()
    .chain(veer_abi::NAT_ICMP_PROGRAMS);
    for (slot, name) in programs {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Missing { kind: "program", name })?
            .try_into()
            .map_err(DataplaneError::program(format!("program {name} is not XDP")))?;
        retrying_eagain(|| p.load())
            .map_err(DataplaneError::program(format!("loading {name} into the kernel (verifier)")))?;
        let fd = p.fd().map_err(DataplaneError::program(format!("{name}'s descriptor")))?.try_clone().map_err(|e| {
            DataplaneError::Program { what: format!("{name}'s descriptor"), source: Box::new(e.into()) }
        })?;
        fds.push((slot, fd));
    }
    let map = ebpf.map_mut(names::JUMPS).ok_or(DataplaneError::Missing { kind: "map", name: names::JUMPS })?;
    let mut jumps = ProgramArray::try_from(map).map_err(DataplaneError::map(names::JUMPS, "opening"))?;
    for (slot, fd) in &fds {
        jumps.set(*slot, fd, 0).map_err(DataplaneError::map(names::JUMPS, format!("setting slot {slot}")))?;
    }
    Ok(())
}

impl Dataplane {
    /// Loads the embedded XDP object with default sizes (not yet attached).
    pub fn load() -> Result<Self> {
        Self::load_with(XDP_OBJECT, &DataplaneOptions::default())
    }

    /// Loads an XDP object with the given sizes (not yet attached).
    pub fn load_with(object: &[u8], opts: &DataplaneOptions) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        Self::load_object(&mut loader, object, opts)
    }

    pub(super) fn load_object(loader: &mut EbpfLoader<'_>, object: &[u8], opts: &DataplaneOptions) -> Result<Self> {
        let svc = opts.max_services;
        for m in map_layout(opts) {
            loader.map_max_entries(m.name, m.max_entries);
        }
        let mut ebpf = loader.load(object).map_err(|e| DataplaneError::Load(Box::new(e)))?;
        let prog = Self::xdp(&mut ebpf)?;
        retrying_eagain(|| prog.load())
            .map_err(DataplaneError::program("loading the XDP program into the kernel (verifier)"))?;
        load_continuations(&mut ebpf)?;
        Ok(Self {
            ebpf,
            max_services: svc,
            max_backends: opts.max_backends,
            attached: StdHashMap::new(),
            held_links: Vec::new(),
            fresh_rings: false,
        })
    }

    /// The entry program of `ebpf`, to load, attach or detach.
    pub(super) fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
        let p =
            ebpf.program_mut(PROGRAM_NAME).ok_or(DataplaneError::Missing { kind: "program", name: PROGRAM_NAME })?;
        p.try_into().map_err(DataplaneError::program("program veer_xdp is not XDP"))
    }

    /// Attaches the VIP-path TC egress program to `iface` (TCX, Linux 6.6+;
    /// it detaches when this dataplane is dropped: VIP-path checks run only
    /// while veerd does).
    pub fn attach_vip_path(&mut self, iface: &str) -> Result<()> {
        use aya::programs::{tc::TcAttachType, SchedClassifier};
        let name = veer_abi::VIP_PATH_PROGRAM;
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Missing { kind: "program", name })?
            .try_into()
            .map_err(DataplaneError::program("veer_vip_path is not a TC program"))?;
        if prog.fd().is_err() {
            retrying_eagain(|| prog.load())
                .map_err(DataplaneError::program("loading veer_vip_path into the kernel (verifier)"))?;
        }
        prog.attach(iface, TcAttachType::Egress)
            .map_err(DataplaneError::program(format!("attaching veer_vip_path to {iface}'s egress")))?;
        Ok(())
    }

    /// Attaches to `iface` (in the calling thread's network namespace).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<()> {
        let prog = Self::xdp(&mut self.ebpf)?;
        let id = prog
            .attach(iface, mode.into())
            .map_err(DataplaneError::program(format!("attaching to {iface} in {mode:?} mode")))?;
        self.attached.insert(iface.to_string(), id);
        Ok(())
    }

    /// Detaches from `iface`.
    pub fn detach(&mut self, iface: &str) -> Result<()> {
        let id = self.attached.remove(iface).ok_or_else(|| DataplaneError::NotAttached(iface.into()))?;
        Self::xdp(&mut self.ebpf)?.detach(id).map_err(DataplaneError::program(format!("detaching from {iface}")))
    }

    /// Interfaces the program is attached to by this handle.
    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.attached.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionFlags, SectionIndex, SymbolKind};

    use super::XDP_OBJECT;

    /// The byte loops bpf-linker exports for what LLVM does not expand.
    const BYTE_LOOPS: [&str; 5] = ["memset", "memmove", "memcpy", "memcmp", "bcmp"];
    /// BPF `call` (`BPF_JMP | BPF_CALL`) with `src_reg` 1: a BPF-to-BPF call.
    const BPF_CALL: u8 = 0x85;
    const BPF_PSEUDO_CALL: u8 = 1;

    /// Every BPF-to-BPF call in the object: (caller's section, offset,
    /// callee's name). A call within a section carries no relocation: its
    /// callee is the function at the offset the instruction names.
    fn calls(obj: &object::File) -> Vec<(String, u64, String)> {
        let name_at = |section: SectionIndex, at: u64| {
            obj.symbols()
                .find(|s| s.section_index() == Some(section) && s.address() == at && s.size() > 0)
                .and_then(|s| s.name().ok().map(str::to_owned))
        };
        let mut calls = Vec::new();
        for section in obj.sections() {
            let executable = matches!(section.flags(), SectionFlags::Elf { sh_flags } if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0);
            let (Ok(name), Ok(code), true) = (section.name(), section.data(), executable) else { continue };
            let relocs: std::collections::HashMap<u64, _> = section.relocations().collect();
            for (i, insn) in code.chunks_exact(8).enumerate() {
                if insn[0] != BPF_CALL || insn[1] >> 4 != BPF_PSEUDO_CALL {
                    continue;
                }
                let at = 8 * i as u64;
                // The callee is `imm + 1` instructions past the caller's
                // own, or past a section symbol the relocation names.
                let past = 8 * (i64::from(i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]])) + 1);
                let symbol = match relocs.get(&at).map(|r| r.target()) {
                    Some(RelocationTarget::Symbol(s)) => obj.symbol_by_index(s).ok(),
                    _ => None,
                };
                let callee = match symbol {
                    Some(s) if s.kind() == SymbolKind::Section => {
                        s.section_index().and_then(|i| name_at(i, s.address().wrapping_add_signed(past)))
                    }
                    Some(s) => s.name().ok().map(str::to_owned),
                    None => name_at(section.index(), section.address() + at.wrapping_add_signed(past)),
                };
                calls.push((name.to_owned(), at, callee.unwrap_or_else(|| "?".into())));
            }
        }
        calls
    }

    /// The programs (their sections, and `.text` with the functions they
    /// call) never call the byte loops bpf-linker exports for what LLVM
    /// does not expand (`memset`, `memmove`): one per zeroed struct tail or
    /// map-to-map copy cost up to 160 instructions and a call.
    #[test]
    fn the_programs_call_no_byte_loop() {
        let obj = object::File::parse(XDP_OBJECT).expect("the embedded XDP object parses");
        let mut calls = calls(&obj);
        // The scan sees calls within `.text`, which carry no relocation,
        // and calls from a program's section into `.text`.
        assert!(
            calls.iter().any(|(s, _, callee)| s == ".text" && callee.contains("try_endpoint"))
                && calls.iter().any(|(s, _, callee)| s == "xdp" && callee.contains("veer_nat")),
            "no call to NAT's `try_endpoint` or program body found: the scan misreads the object ({} calls)",
            calls.len()
        );
        // The backends' agent, and the bench's baselines (a byte loop there
        // would flatter veer).
        let agent = object::File::parse(crate::dataplane::agent::AGENT_OBJECT).expect("the agent object parses");
        calls.extend(self::calls(&agent));
        #[cfg(feature = "testing")]
        {
            let baseline =
                object::File::parse(crate::dataplane::testing::BASELINE_OBJECT).expect("the baselines parse");
            calls.extend(self::calls(&baseline));
        }
        let loops: Vec<_> = calls.iter().filter(|(_, _, callee)| BYTE_LOOPS.contains(&callee.as_str())).collect();
        assert!(loops.is_empty(), "byte-loop calls in the programs: {loops:#?}");
    }
}
