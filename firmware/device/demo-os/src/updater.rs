//! The OS's update client: checks in through the gateway, and on an offer streams the image
//! into the `firmware` update agent, which writes slot B through the NVMC; then resets so that
//! the bootloader swaps. Everything the device reports comes from its flash (`update::status`)
//! or from the agent's own verdicts.

use core::fmt::Write as _;

use firmware::flash::FlashLayout;
use firmware::image::{ImageId, SignedRelease};
use firmware::link::{Down, EventKind, MAX_DATA, MAX_DETAIL, Up};
use firmware::provision::Provision;
use firmware::update::{Agent, AgentConfig, status};
use heapless::String;
use nrf51::board;
use nrf51::nvmc::Nvmc;

use crate::link::Link;
use crate::reason::reason;

/// How long the gateway gets to answer one request.
const ANSWER_MS: u32 = 3_000;
/// Tries per request before the device gives up on this round.
const TRIES: u32 = 3;
/// Pause between check-ins when no gateway answers.
const RETRY_MS: u32 = 2_000;
/// The heatshrink window lent to the agent: 16 KiB of RAM leave 1 KiB for it, so images for
/// this device are fused with `--window 10` (a larger window is refused by name).
const WINDOW: usize = 1024;
/// Installed bytes between download checkpoints (each costs a 32-byte state record).
const CHECKPOINT_EVERY: u32 = 4 * board::PAGE;
/// Stack an install needs below `round`, from the frame sizes of its deepest chain (install
/// 5.3 KB with the agent and its window, the agent taking the header 3.4 KB, Ed25519
/// verification 7.4 KB and more). Checked before each install: an install that would overflow
/// the stack is refused with this reason instead of faulting.
const INSTALL_STACK: usize = 17 * 1024;
/// Events queued for the gateway at most.
const QUEUE: usize = 2;

/// An event waiting for the gateway to take it.
struct Event {
    image: ImageId,
    kind: EventKind,
    detail: String<MAX_DETAIL>,
}

/// The update client.
pub struct Updater<'a> {
    link: Link,
    flash: Nvmc,
    layout: &'a FlashLayout,
    provision: Option<Provision<'static>>,
    /// Events not yet acknowledged by the gateway, oldest first.
    queue: heapless::Vec<Event, QUEUE>,
    /// An image refused or failed in this session: not tried again until the next reset.
    refused: Option<ImageId>,
    /// Whether the last check-in went unanswered (said once, not every round).
    unheard: bool,
}

impl<'a> Updater<'a> {
    /// The client; `provision` is `None` on a device without a usable provisioning record
    /// (it then refuses every offer, saying why).
    pub fn new(
        link: Link,
        flash: Nvmc,
        layout: &'a FlashLayout,
        provision: Option<Provision<'static>>,
    ) -> Self {
        Updater {
            link,
            flash,
            layout,
            provision,
            queue: heapless::Vec::new(),
            refused: None,
            unheard: false,
        }
    }

    /// Prints a console line.
    pub fn say(&mut self, args: core::fmt::Arguments<'_>) {
        self.link.say(args);
    }

    /// Queues an event for the server (sent before the next check-in, until acknowledged).
    pub fn report(&mut self, image: ImageId, kind: EventKind, detail: core::fmt::Arguments<'_>) {
        let mut text = String::new();
        // Cut at MAX_DETAIL: the start of a reason says the most.
        let _ = text.write_fmt(detail);
        if self.queue.is_full() {
            self.queue.remove(0);
        }
        let _ = self.queue.push(Event { image, kind, detail: text });
    }

    /// Sends the queued events; false if the gateway did not take them all.
    pub fn flush(&mut self) -> bool {
        while let Some(event) = self.queue.first() {
            let message = Up::Event { image: event.image, kind: event.kind, detail: &event.detail };
            let mut taken = false;
            for _ in 0..TRIES {
                match self.link.request(&message, ANSWER_MS) {
                    Some(Down::Recorded) => {
                        taken = true;
                        break;
                    }
                    // The server said no (it does not know the image, say): retrying would not help.
                    Some(Down::Error { .. }) => {
                        taken = true;
                        break;
                    }
                    _ => {}
                }
            }
            if !taken {
                return false;
            }
            self.queue.remove(0);
        }
        true
    }

    /// Checks in forever; installs what is offered.
    pub fn run(&mut self) -> ! {
        loop {
            let wait_ms = self.round();
            self.link.pause(wait_ms);
        }
    }

    /// One round: events, check-in, and the update offered if any. Returns how long to wait.
    #[inline(never)]
    fn round(&mut self) -> u32 {
        if !self.flush() {
            return self.unanswered();
        }
        let Ok(state) = status(&mut self.flash, self.layout) else {
            self.say(format_args!("fwi demo os: state log unreadable; not checking in"));
            return RETRY_MS * 10;
        };
        let mut release = [0u8; SignedRelease::MAX_LEN];
        let offer = match self.link.request(&Up::Status(state), ANSWER_MS) {
            None => return self.unanswered(),
            Some(Down::NoUpdate { check_again_s }) => Err(u32::from(check_again_s.max(1)) * 1000),
            Some(Down::Offer { image, size, release: statement }) => {
                if statement.len() > release.len() {
                    Ok((image, size, None))
                } else {
                    release[..statement.len()].copy_from_slice(statement);
                    Ok((image, size, Some(statement.len())))
                }
            }
            Some(Down::Error { message }) => {
                let mut text: String<96> = String::new();
                let _ = text.push_str(message.get(..96).unwrap_or(message));
                self.say(format_args!("fwi demo os: gateway: {text}"));
                Err(RETRY_MS * 5)
            }
            Some(_) => Err(RETRY_MS),
        };
        if self.unheard {
            self.unheard = false;
            self.say(format_args!("fwi demo os: the gateway answers"));
        }
        match offer {
            Err(wait) => wait,
            Ok((image, _, _)) if self.refused == Some(image) => RETRY_MS * 5,
            Ok((image, _, None)) => {
                self.fail(image, format_args!("release statement too long"));
                RETRY_MS
            }
            Ok((image, size, Some(len))) => {
                let free = crate::stack::free();
                if free < INSTALL_STACK {
                    self.fail(
                        image,
                        format_args!(
                            "not enough RAM for the update agent: it needs about {INSTALL_STACK} bytes of stack, {free} are free"
                        ),
                    );
                } else {
                    self.install(image, size, &release[..len]);
                }
                RETRY_MS
            }
        }
    }

    fn unanswered(&mut self) -> u32 {
        if !self.unheard {
            self.unheard = true;
            self.say(format_args!("fwi demo os: no gateway answers; checking in every 2 s"));
        }
        RETRY_MS
    }

    /// Refuses or abandons `image` for this session, and says and reports why.
    fn fail(&mut self, image: ImageId, why: core::fmt::Arguments<'_>) {
        self.refused = Some(image);
        self.say(format_args!("fwi demo os: update {image} refused: {why}"));
        self.report(image, EventKind::Failed, why);
        self.flush();
    }

    /// Downloads `image` into slot B through the agent; on success resets into the bootloader.
    /// Not inlined: its buffers (agent, window, keys) take stack only while it runs.
    #[inline(never)]
    fn install(&mut self, image: ImageId, size: u32, release: &[u8]) {
        let Some(provision) = self.provision.clone() else {
            self.fail(image, format_args!("this device has no provisioning record"));
            return;
        };
        let (Ok(build_keys), Ok(environment_keys)) =
            (provision.build_keys(), provision.environment_keys())
        else {
            self.fail(image, format_args!("a key in the provisioning record is unusable"));
            return;
        };
        let config = AgentConfig {
            board: board::BOARD,
            build_keys: &build_keys,
            environment: provision.environment,
            environment_keys: &environment_keys,
            checkpoint_every: CHECKPOINT_EVERY,
        };
        let mut window = [0u8; WINDOW];
        // Used in place: moving the agent out of the Result would copy its 2.5 KB.
        let mut made = Agent::new(&mut self.flash, self.layout, config, &mut window);
        let agent = match &mut made {
            Ok(agent) => agent,
            Err(e) => return self.fail(image, format_args!("{}", reason(e))),
        };
        let started = match agent.begin(&mut self.flash, release) {
            Ok(started) => started,
            Err(e) => return self.fail(image, format_args!("{}", reason(&e))),
        };
        let from = started.resume_from;
        self.say(format_args!("fwi demo os: downloading {image}: {size} bytes from byte {from}"));
        self.report(image, EventKind::Downloading, format_args!("from byte {from}"));
        if !self.flush() {
            return;
        }

        let mut offset = from;
        let mut shown = 0;
        while offset < size {
            let len = (size - offset).min(MAX_DATA as u32) as u16;
            let fetch = Up::Fetch { image, offset, len };
            let mut fed = None;
            for _ in 0..TRIES {
                match self.link.request(&fetch, ANSWER_MS) {
                    Some(Down::Data { offset: at, bytes })
                        if at == offset && !bytes.is_empty() && bytes.len() <= usize::from(len) =>
                    {
                        fed = Some(agent.feed(&mut self.flash, bytes).map(|()| bytes.len() as u32));
                        break;
                    }
                    Some(Down::Error { .. }) => break,
                    _ => {}
                }
            }
            match fed {
                Some(Ok(n)) => offset += n,
                Some(Err(e)) => return self.fail(image, format_args!("{}", reason(&e))),
                None => {
                    // The gateway went quiet: the agent's last checkpoint keeps what is written.
                    self.say(format_args!(
                        "fwi demo os: download of {image} stalled at byte {offset}; resuming later"
                    ));
                    return;
                }
            }
            let quarter = offset * 4 / size;
            if quarter > shown {
                shown = quarter;
                self.say(format_args!("fwi demo os: {offset} of {size} bytes"));
            }
        }
        if let Err(e) = agent.finish(&mut self.flash) {
            return self.fail(image, format_args!("{}", reason(&e)));
        }
        self.say(format_args!(
            "fwi demo os: {image} verified in slot B; resetting to install it (stack used: {} bytes)",
            crate::stack::used()
        ));
        self.report(image, EventKind::Installed, format_args!(""));
        self.flush();
        cortex_m::peripheral::SCB::sys_reset();
    }
}
