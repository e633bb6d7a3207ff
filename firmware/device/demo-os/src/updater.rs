//! The OS's update client: checks in through the gateway, and on an offer streams the image
//! into the `firmware` update agent, which writes slot B through the NVMC; then resets so that
//! the bootloader swaps. Everything the device reports comes from its flash (`update::status`)
//! or from the agent's own verdicts.

use core::fmt::Write as _;

use firmware::flash::FlashLayout;
use firmware::image::{ImageId, SignedRelease};
use firmware::link::{Down, EventImage, EventKind, MAX_DATA, MAX_DETAIL, Up};
use firmware::provision::Provision;
use firmware::update::{Agent, AgentConfig, UpdateError, status};
use heapless::String;
use nrf51::board;
use nrf51::nvmc::Nvmc;

use crate::link::Link;
use crate::reason::reason;

/// How long the gateway gets to answer one request.
const ANSWER_MS: u32 = 3_000;
/// Tries per request before the device gives up on this round.
const TRIES: u32 = 3;
/// A short pause between rounds (after an install that did not reset, a refused offer), and
/// the first pause after a check-in that was not served (no gateway answered, or it could not
/// reach the server): doubled after each such check-in in a row, up to [`MAX_BACKOFF_MS`], so
/// that a fleet whose server is down waits instead of hammering it, and comes back soon after.
const RETRY_MS: u32 = 2_000;
/// The longest pause between check-ins that are not served.
const MAX_BACKOFF_MS: u32 = 64_000;
/// The heatshrink window lent to the agent: 16 KiB of RAM leave 1 KiB for it, so images for
/// this device are fused with `--window 10` (a larger window is refused by name).
const WINDOW: usize = 1024;
/// Installed bytes between download checkpoints (each costs a 32-byte state record).
const CHECKPOINT_EVERY: u32 = 4 * board::PAGE;
/// Stack an install needs below `run`: its deepest chain is `install` (3.2 KB: the agent, its
/// 1 KiB window, the keys), `download`, the agent taking the header, and Ed25519 verifying it
/// (7.6 KB); 13.1 KB in all, by the frame sizes of the release build (firmware/device/NOTES.md
/// says how to measure). Checked before each install: an install that would overflow the
/// stack is refused with this reason instead of faulting.
const INSTALL_STACK: usize = 13 * 1024 + 512;
/// Events queued for the gateway at most.
const QUEUE: usize = 2;

/// How sending the queued events went.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// The gateway recorded every one (or there were none).
    All,
    /// No answer: no gateway is listening. The events stay queued.
    Unanswered,
    /// The gateway answered the first one with an error: the server is unreachable (then it
    /// is kept for later) or refused it (then it is dropped, once a check-in shows the server
    /// answers: see `Updater::round`). It stays queued until then.
    Refused,
}

/// An event waiting for the gateway to take it.
struct Event {
    image: EventImage,
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
    /// The pause after the next check-in that is not served (see [`RETRY_MS`]).
    backoff_ms: u32,
    /// The signed release statement of the offer being taken.
    statement: heapless::Vec<u8, { SignedRelease::MAX_LEN }>,
}

/// What a round decided.
enum Next {
    /// Check in again after this many milliseconds.
    Wait(u32),
    /// Install `image` (`size` bytes), whose release statement is in `Updater::statement`.
    Install { image: ImageId, size: u32 },
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
            backoff_ms: RETRY_MS,
            statement: heapless::Vec::new(),
        }
    }

    /// The flash layout.
    pub fn layout(&self) -> &'a FlashLayout {
        self.layout
    }

    /// Prints a console line.
    pub fn say(&mut self, args: core::fmt::Arguments<'_>) {
        self.link.say(args);
    }

    /// Queues an event for the server (sent before the next check-in, until acknowledged).
    pub fn report(
        &mut self,
        image: impl Into<EventImage>,
        kind: EventKind,
        detail: core::fmt::Arguments<'_>,
    ) {
        let mut text = String::new();
        // Cut at MAX_DETAIL: the start of a reason says the most.
        let _ = text.write_fmt(detail);
        if self.queue.is_full() {
            self.queue.remove(0);
        }
        let _ = self.queue.push(Event { image: image.into(), kind, detail: text });
    }

    /// Sends the queued events, oldest first, until one is not recorded.
    pub fn flush(&mut self) -> Flushed {
        while let Some(event) = self.queue.first() {
            let message = Up::Event { image: event.image, kind: event.kind, detail: &event.detail };
            let mut sent = Flushed::Unanswered;
            for _ in 0..TRIES {
                match self.link.request(&message, ANSWER_MS) {
                    Some(Down::Recorded) => {
                        sent = Flushed::All;
                        break;
                    }
                    // Trying again now would not help, whether the server is away or said no.
                    Some(Down::Error { .. }) => {
                        sent = Flushed::Refused;
                        break;
                    }
                    _ => {}
                }
            }
            if sent != Flushed::All {
                return sent;
            }
            self.queue.remove(0);
        }
        Flushed::All
    }

    /// Checks in forever; installs what is offered.
    pub fn run(&mut self) -> ! {
        loop {
            // The install runs from this frame, not from `round`'s: the update's deepest
            // stack (Ed25519 under the agent) then starts as high as it can.
            let wait_ms = match self.round() {
                Next::Wait(ms) => ms,
                Next::Install { image, size } => {
                    let free = crate::stack::free();
                    if free < INSTALL_STACK {
                        self.fail(
                            image,
                            format_args!(
                                "not enough RAM for the update agent: it needs about {INSTALL_STACK} bytes of stack, {free} are free"
                            ),
                        );
                    } else {
                        self.install(image, size);
                    }
                    RETRY_MS
                }
            };
            self.link.pause(wait_ms);
        }
    }

    /// One round: events, check-in, and what to do about the offer if any.
    #[inline(never)]
    fn round(&mut self) -> Next {
        let flushed = self.flush();
        if flushed == Flushed::Unanswered {
            return Next::Wait(self.unanswered());
        }
        let Ok(state) = status(&mut self.flash, self.layout) else {
            self.say(format_args!("fwi demo os: state log unreadable; not checking in"));
            return Next::Wait(RETRY_MS * 10);
        };
        self.statement.clear();
        let offer = match self.link.request(&Up::Status(state), ANSWER_MS) {
            None => return Next::Wait(self.unanswered()),
            Some(Down::NoUpdate { check_again_s }) => Err(u32::from(check_again_s.max(1)) * 1000),
            Some(Down::Offer { image, size, release }) => {
                // Too long for the buffer: left empty, refused below.
                let _ = self.statement.extend_from_slice(release);
                Ok((image, size))
            }
            Some(Down::Error { message }) => {
                // The gateway could not check in for us (the server is unreachable, say).
                let mut text: String<96> = String::new();
                let _ = text.push_str(message.get(..96).unwrap_or(message));
                self.heard();
                let wait = self.back_off();
                self.say(format_args!(
                    "fwi demo os: gateway: {text}; checking in again in {} s",
                    wait / 1000
                ));
                return Next::Wait(wait);
            }
            Some(_) => Err(RETRY_MS),
        };
        // The check-in was served: the server answers, so an event it answered with an error
        // just before was refused, not lost on the way; it is dropped.
        if flushed == Flushed::Refused && !self.queue.is_empty() {
            self.queue.remove(0);
        }
        self.backoff_ms = RETRY_MS;
        self.heard();
        match offer {
            Err(wait) => Next::Wait(wait),
            Ok((image, _)) if self.refused == Some(image) => Next::Wait(RETRY_MS * 5),
            Ok((image, _)) if self.statement.is_empty() => {
                self.fail(image, format_args!("release statement empty or too long"));
                Next::Wait(RETRY_MS)
            }
            Ok((image, size)) => Next::Install { image, size },
        }
    }

    /// The pause after a check-in that went unanswered; said the first time.
    fn unanswered(&mut self) -> u32 {
        let wait = self.back_off();
        if !self.unheard {
            self.unheard = true;
            self.say(format_args!(
                "fwi demo os: no gateway answers; checking in again in {} s, then less often (at most every {} s)",
                wait / 1000,
                MAX_BACKOFF_MS / 1000
            ));
        }
        wait
    }

    /// A gateway answered: said once after a silence.
    fn heard(&mut self) {
        if self.unheard {
            self.unheard = false;
            self.say(format_args!("fwi demo os: the gateway answers"));
        }
    }

    /// The pause after a check-in that was not served; the next one is twice as long, up to
    /// [`MAX_BACKOFF_MS`].
    fn back_off(&mut self) -> u32 {
        let wait = self.backoff_ms;
        self.backoff_ms = wait.saturating_mul(2).min(MAX_BACKOFF_MS);
        wait
    }

    /// Refuses or abandons `image` for this session, and says and reports why. Not inlined,
    /// like the other steps below: their formatting temporaries would otherwise sit in
    /// `install`'s frame, under Ed25519's stack.
    #[inline(never)]
    fn fail(&mut self, image: ImageId, why: core::fmt::Arguments<'_>) {
        self.refused = Some(image);
        self.say(format_args!("fwi demo os: update {image} refused: {why}"));
        self.report(image, EventKind::Failed, why);
        self.flush();
    }

    /// Downloads `image` into slot B through the agent; on success resets into the bootloader.
    /// Not inlined: the agent, its window and the keys take stack only while it runs. The
    /// deepest stack of an update is here: this frame, then `download`, the agent taking the
    /// header, and Ed25519 verifying it (`INSTALL_STACK`).
    #[inline(never)]
    fn install(&mut self, image: ImageId, size: u32) {
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
        // Used in place: moving the agent out of the Result would copy it.
        let mut made = Agent::new(&mut self.flash, self.layout, config, &mut window);
        let agent = match &mut made {
            Ok(agent) => agent,
            Err(e) => return self.failed(image, e),
        };
        let Some(from) = self.start(agent, image, size) else { return };
        if self.download(agent, image, size, from) {
            self.complete(agent, image);
        }
    }

    /// [`Self::fail`] with the agent's reason.
    #[inline(never)]
    fn failed(&mut self, image: ImageId, error: &UpdateError) {
        self.fail(image, format_args!("{}", reason(error)));
    }

    /// Offers the release (`statement`) to the agent; where the download starts, if it may.
    #[inline(never)]
    fn start(&mut self, agent: &mut Agent, image: ImageId, size: u32) -> Option<u32> {
        let started = match agent.begin(&mut self.flash, &self.statement) {
            Ok(started) => started,
            Err(e) => {
                self.failed(image, &e);
                return None;
            }
        };
        let from = started.resume_from;
        self.say(format_args!("fwi demo os: downloading {image}: {size} bytes from byte {from}"));
        self.report(image, EventKind::Downloading, format_args!("from byte {from}"));
        (self.flush() != Flushed::Unanswered).then_some(from)
    }

    /// Fetches the image from `from` on and feeds it to the agent; true once all of it went in.
    #[inline(never)]
    fn download(&mut self, agent: &mut Agent, image: ImageId, size: u32, from: u32) -> bool {
        let mut offset = from;
        let mut shown = 0;
        while offset < size {
            let len = (size - offset).min(MAX_DATA as u32) as u16;
            let mut fed = None;
            for _ in 0..TRIES {
                match self.link.fetch(image, offset, len, ANSWER_MS) {
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
                Some(Err(e)) => {
                    self.failed(image, &e);
                    return false;
                }
                None => {
                    self.stalled(image, offset);
                    return false;
                }
            }
            let quarter = offset * 4 / size;
            if quarter > shown {
                shown = quarter;
                self.progress(offset, size);
            }
        }
        true
    }

    /// The gateway went quiet: the agent's last checkpoint keeps what is written.
    #[inline(never)]
    fn stalled(&mut self, image: ImageId, offset: u32) {
        self.say(format_args!(
            "fwi demo os: download of {image} stalled at byte {offset}; resuming later"
        ));
    }

    #[inline(never)]
    fn progress(&mut self, offset: u32, size: u32) {
        self.say(format_args!("fwi demo os: {offset} of {size} bytes"));
    }

    /// Ends the download: the agent checks slot B and marks it pending; then the reset.
    #[inline(never)]
    fn complete(&mut self, agent: &mut Agent, image: ImageId) {
        if let Err(e) = agent.finish(&mut self.flash) {
            return self.failed(image, &e);
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
