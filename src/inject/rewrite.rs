//! The streaming rewrite of one page: lol_html puts the widget into each
//! selected form (and its script tags after the first) as the app's bytes
//! pass, and amends a `<meta http-equiv="Content-Security-Policy">` as the
//! header is amended. Output is handed back chunk by chunk; nothing waits
//! for the whole page.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use lol_html::html_content::ContentType;
use lol_html::{AsciiCompatibleEncoding, MemorySettings, Selector, send};

use super::csp;
use super::{InjectPage, Outcome};

/// A page needs far less: a larger tag than this is passed through as it
/// is from there on (lol_html's graceful bail-out), never buffered.
const MAX_PARSER_MEMORY: usize = 256 * 1024;

/// Where a page may set its policy in markup instead of a header.
static META: LazyLock<Selector> = LazyLock::new(|| {
    "meta[http-equiv]"
        .parse()
        .unwrap_or_else(|e| unreachable!("a fixed selector: {e}"))
});

/// Output the rewriter has produced and not yet handed back.
type Pending = Arc<Mutex<BytesMut>>;

/// One page's rewrite, held by the response body that streams it.
pub struct Rewriter {
    /// `None` once the rewriter has ended or bailed out: what remains of the
    /// page passes through unchanged.
    html: Option<send::HtmlRewriter<'static, Sink>>,
    pending: Pending,
    forms: Arc<AtomicUsize>,
    page: Arc<InjectPage>,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("page", &self.page.rule.route.origin)
            .finish_non_exhaustive()
    }
}

struct Sink(Pending);

impl lol_html::OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        lock(&self.0).extend_from_slice(chunk);
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, BytesMut> {
    // Only this rewriter's own calls take the lock: it is never contended.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Rewriter {
    pub(super) fn new(
        page: Arc<InjectPage>,
        encoding: AsciiCompatibleEncoding,
        nonce: Option<String>,
    ) -> Self {
        let pending: Pending = Arc::default();
        let forms = Arc::new(AtomicUsize::new(0));
        let markup = page.markup.clone();
        let scripts = page.scripts(nonce.as_deref());
        let sources = page.sources.clone();
        let count = forms.clone();
        let settings = send::Settings::new_send()
            .append_element_content_handler((
                Cow::Borrowed(&page.rule.form),
                send::ElementContentHandlers::default().element(
                    move |form: &mut send::Element<'_, '_>| {
                        form.append(&markup, ContentType::Html);
                        // The scripts once per page, after the first container.
                        if count.fetch_add(1, Ordering::Relaxed) == 0 {
                            form.append(&scripts, ContentType::Html);
                        }
                        Ok(())
                    },
                ),
            ))
            .append_element_content_handler((
                Cow::Borrowed(&*META),
                send::ElementContentHandlers::default().element(
                    move |meta: &mut send::Element<'_, '_>| {
                        let is_csp = meta.get_attribute("http-equiv").is_some_and(|v| {
                            v.trim().eq_ignore_ascii_case("content-security-policy")
                        });
                        if let (true, Some(policy)) = (is_csp, meta.get_attribute("content")) {
                            meta.set_attribute("content", &csp::amend(&policy, &sources))?;
                        }
                        Ok(())
                    },
                ),
            ))
            .with_encoding(encoding)
            .with_memory_settings(
                MemorySettings::new()
                    .with_max_allowed_memory_usage(MAX_PARSER_MEMORY)
                    .with_graceful_bail_out_on_memory_limit_exceeded(true),
            )
            // Non-conforming markup is passed on rather than refused: the
            // page is the app's, and a form missed is served unchanged.
            .with_strict(false)
            .with_graceful_bail_out_on_content_handler_error(true);
        Self {
            html: Some(send::HtmlRewriter::new(settings, Sink(pending.clone()))),
            pending,
            forms,
            page,
        }
    }

    /// The rewritten bytes for `chunk` so far (possibly none yet: lol_html
    /// holds an unfinished tag until it ends).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        match &mut self.html {
            Some(html) => {
                if let Err(e) = html.write(chunk) {
                    // Bailed out gracefully: what it held is already in the
                    // output, and the rest passes through.
                    self.html = None;
                    self.page.bailed_out(&e);
                }
                self.take()
            }
            None => Bytes::copy_from_slice(chunk),
        }
    }

    /// The last bytes, once the app's body has ended.
    pub fn finish(&mut self) -> Bytes {
        if let Some(html) = self.html.take() {
            if let Err(e) = html.end() {
                self.page.bailed_out(&e);
            }
            let outcome = if self.forms.load(Ordering::Relaxed) == 0 {
                Outcome::Unmatched
            } else {
                Outcome::Injected
            };
            self.page.count(outcome);
        }
        self.take()
    }

    fn take(&self) -> Bytes {
        lock(&self.pending).split().freeze()
    }
}
