// The memoir's chapters as the model drafted them from the interview: each paragraph opens the
// transcript segments it came from (with their recordings), the family edits, reorders and
// approves chapters and has them written again, and the book downloads as EPUB, PDF or Markdown.

import { get, post, put } from './api.js';
import { announce, confirmAction, h, replace, showError, uid, when } from './dom.js';
import { icon } from './icons.js';
import { moved, projectNav, refocus, savePlan } from './memoir-shared.js';

const BOOK_FORMATS = [
  ['epub', 'EPUB', 'for e-readers and phones'],
  ['pdf', 'PDF', 'to print (A5)'],
  ['md', 'Markdown', 'plain text to edit further'],
];

export async function chaptersPage(main, app, project, focusKeys = null) {
  document.title = `Chapters · ${project.title} · Conch`;
  const chapters = await get(`/api/memoir/projects/${project.id}/chapters`);
  const view = { main, app, project, chapters, editing: null };
  draw(view);
  if (focusKeys) refocus(main, focusKeys);
}

function chapterUrl(project, chapter) {
  return `/api/memoir/projects/${project.id}/chapters/${encodeURIComponent(chapter.chapter_id)}`;
}

function draw(view) {
  const { main, project, chapters } = view;
  replace(main, h('div', { class: 'page narrow' },
    projectNav(project, 'chapters'),
    h('h1', {}, 'Chapters and book'),
    h('p', {}, 'Each chapter is written from the interview in the teller’s own words. Select a ',
      'paragraph to see and hear what it was written from.'),
    h('ol', { class: 'book-chapters' }, chapters.map((chapter, index) => chapterCard(view, chapter, index))),
    bookDownloads(project, chapters)));
}

function bookDownloads(project, chapters) {
  const approvedOnly = h('input', { type: 'checkbox', id: 'approved-only' });
  const links = BOOK_FORMATS.map(([extension, label, about]) => {
    const link = h('a', {
      class: 'button secondary', href: `/api/memoir/projects/${project.id}/book.${extension}`,
      download: `${project.title}.${extension}`,
    }, icon('download'), `Download ${label}`);
    return { link, extension, item: h('li', {}, link, h('span', { class: 'meta' }, about)) };
  });
  approvedOnly.addEventListener('change', () => {
    for (const { link, extension } of links) {
      link.href = `/api/memoir/projects/${project.id}/book.${extension}${approvedOnly.checked ? '?approved_only=1' : ''}`;
    }
  });
  const written = chapters.some((c) => c.paragraphs.length);
  return h('section', { class: 'card', 'aria-labelledby': 'book-title' },
    h('h2', { id: 'book-title' }, 'Download the book'),
    written
      ? h('p', {}, 'Every written chapter, in the order of the plan, with a link to its recordings.')
      : h('p', {}, 'The book can be downloaded once a chapter is written.'),
    h('div', { class: 'field checkbox' }, approvedOnly, h('label', { for: 'approved-only' }, 'Only approved chapters')),
    h('ul', { class: 'exports' }, links.map((l) => l.item)));
}

function status(chapter) {
  if (chapter.approved) return h('span', { class: 'badge approved' }, icon('check'), 'Approved');
  if (!chapter.paragraphs.length) return h('span', { class: 'badge' }, 'Not written yet');
  return h('span', { class: 'badge' }, chapter.drafted_at ? `Drafted ${when(chapter.drafted_at)}` : 'Written by the family');
}

function chapterCard(view, chapter, index) {
  const { project, chapters } = view;
  const key = `ch:${chapter.chapter_id}`;
  const name = `“${chapter.title}”`;
  const reload = (message, focusKeys) => {
    if (message) announce(message);
    return chaptersPage(view.main, view.app, project, focusKeys);
  };
  /** Runs `work` with the card marked busy and `busyText` shown; on failure, says why. */
  const busyWhile = async (button, busyText, work) => {
    const card = button.closest('.book-chapter');
    const note = card.querySelector('.working');
    card.setAttribute('aria-busy', 'true');
    for (const control of card.querySelectorAll('button')) control.disabled = true;
    note.textContent = busyText;
    try {
      await work();
    } catch (error) {
      showError(error);
      card.removeAttribute('aria-busy');
      for (const control of card.querySelectorAll('button')) control.disabled = false;
      note.textContent = '';
    }
  };

  const move = (to, focusKeys) => async () => {
    const plan = project.plan.chapters;
    const from = plan.findIndex((c) => c.id === chapter.chapter_id);
    const target = plan.findIndex((c) => c.id === chapters[to].chapter_id);
    try {
      view.project = await savePlan(project, moved(plan, from, target));
      announce(`Moved ${name} to place ${to + 1}`);
      await chaptersPage(view.main, view.app, view.project, focusKeys);
    } catch (error) {
      showError(error);
    }
  };

  const buttons = [];
  const draftButton = (label, keepEdits, dataKey) => {
    const button = h('button', {
      'aria-label': `${label}: ${chapter.title}`,
      type: 'button', class: keepEdits ? null : 'secondary', 'data-key': dataKey,
      onclick: async () => {
        if (!keepEdits && chapter.paragraphs.some((p) => p.edited_by_family)
          && !await confirmAction('Write it again from scratch?', `The family’s changes to ${name} will be replaced.`, 'Write again')) return;
        await busyWhile(button, 'Writing the chapter… this can take a few minutes.', async () => {
          await post(`${chapterUrl(project, chapter)}/draft`, { keep_edits: keepEdits });
          await reload(`${chapter.title} written`, [dataKey]);
        });
      },
    }, icon('regenerate'), label);
    return button;
  };
  if (!chapter.paragraphs.length) {
    buttons.push(draftButton('Write the chapter', true, `${key}:draft`));
  } else {
    buttons.push(draftButton('Write again, keeping our changes', true, `${key}:redraft`));
    buttons.push(draftButton('Write again from scratch', false, `${key}:fresh`));
    const approve = h('button', {
      'aria-label': `Approved: ${chapter.title}`,
      type: 'button', class: 'secondary', 'aria-pressed': String(chapter.approved), 'data-key': `${key}:approve`,
      onclick: () => busyWhile(approve, '', async () => {
        await post(`${chapterUrl(project, chapter)}/approve`, { approved: !chapter.approved });
        await reload(chapter.approved ? `${chapter.title} is no longer approved` : `${chapter.title} approved`, [`${key}:approve`]);
      }),
    }, icon('check'), 'Approved');
    buttons.push(approve);
  }
  buttons.push(h('button', {
    'aria-label': `${chapter.paragraphs.length ? 'Edit' : 'Write it ourselves'}: ${chapter.title}`,
    type: 'button', class: 'secondary', 'data-key': `${key}:edit`,
    onclick: () => {
      view.editing = chapter.chapter_id;
      draw(view);
      view.main.querySelector('.chapter-editor textarea, .chapter-editor button')?.focus();
    },
  }, icon('edit'), chapter.paragraphs.length ? 'Edit' : 'Write it ourselves'));
  buttons.push(
    h('button', {
      'aria-label': `Move up: ${chapter.title}`,
      type: 'button', class: 'secondary small', disabled: index === 0, 'data-key': `${key}:up`,
      onclick: move(index - 1, [`${key}:up`, `${key}:down`]),
    }, 'Move up'),
    h('button', {
      'aria-label': `Move down: ${chapter.title}`,
      type: 'button', class: 'secondary small', disabled: index === chapters.length - 1, 'data-key': `${key}:down`,
      onclick: move(index + 1, [`${key}:down`, `${key}:up`]),
    }, 'Move down'));

  const editing = view.editing === chapter.chapter_id;
  return h('li', { class: 'card book-chapter', 'data-chapter': chapter.chapter_id },
    h('div', { class: 'chapter-head' }, h('h2', {}, `${index + 1}. ${chapter.title}`), status(chapter)),
    editing ? null : h('div', { class: 'actions start' }, buttons),
    h('p', { class: 'working', role: 'status' }),
    editing ? chapterEditor(view, chapter, key) : draftText(chapter, project.language));
}

/** The chapter's paragraphs (in the teller's `language`); selecting one opens the segments it cites. */
function draftText(chapter, language) {
  if (!chapter.paragraphs.length) return null;
  const segments = new Map(chapter.segments.map((s) => [s.id, s]));
  return h('div', { class: 'draft' }, chapter.paragraphs.map((paragraph, index) => {
    const sourcesId = uid('sources');
    const sources = h('div', { class: 'sources', id: sourcesId, hidden: true },
      h('h3', {}, `Where paragraph ${index + 1} comes from`),
      paragraph.sources.length
        ? h('ul', {}, paragraph.sources.map((id) => segmentItem(segments.get(id), id, language)))
        : h('p', { class: 'meta' }, 'No interview segment: the family wrote this paragraph.'));
    const toggle = h('button', {
      type: 'button', class: 'secondary small', 'aria-expanded': 'false', 'aria-controls': sourcesId,
    }, `Sources (${paragraph.sources.length})`, h('span', { class: 'visually-hidden' }, ` of paragraph ${index + 1}`));
    const text = h('p', { class: 'paragraph-text', lang: language }, paragraph.text);
    const block = h('div', { class: `paragraph ${paragraph.verdict}` },
      text,
      paragraph.verdict === 'flagged' && paragraph.unsupported.length
        ? h('p', { class: 'flag' }, 'Check these words, which are in none of its sources: ',
          paragraph.unsupported.map((u) => u.term).join(', '))
        : null,
      h('div', { class: 'paragraph-tools' },
        toggle,
        paragraph.edited_by_family ? h('span', { class: 'meta' }, 'Changed by the family') : null),
      sources);
    const flip = () => {
      const open = sources.hidden;
      sources.hidden = !open;
      toggle.setAttribute('aria-expanded', String(open));
      block.classList.toggle('open', open);
    };
    toggle.addEventListener('click', flip);
    // The paragraph itself is a large target for the mouse; the button serves the keyboard.
    text.addEventListener('click', () => { if (!window.getSelection()?.toString()) flip(); });
    return block;
  }));
}

function segmentItem(segment, id, language) {
  if (!segment) return h('li', { class: 'meta' }, `Segment ${id} is no longer in the interview.`);
  const teller = segment.speaker === 'teller';
  return h('li', { class: `segment ${segment.speaker}` },
    h('p', { class: 'speaker' }, teller ? 'The teller said' : 'The interviewer asked'),
    h('p', { class: 'said', lang: language }, segment.text),
    (segment.recordings || []).map((recording, n) => h('audio', {
      controls: true, preload: 'none', src: recording.audio_url,
      'aria-label': `Recording ${n + 1} of this answer`,
    })));
}

/** Edits the paragraphs' text and order, adds and removes paragraphs; saved as a whole. */
function chapterEditor(view, chapter, key) {
  let paragraphs = chapter.paragraphs.map((p) => ({ text: p.text, sources: p.sources }));
  const list = h('ol', { class: 'paragraph-editor' });
  const fill = (focusKeys) => {
    replace(list, paragraphs.map((paragraph, index) => {
      const box = h('textarea', { rows: '5', id: uid('paragraph'), value: paragraph.text, 'data-key': `p:${index}:text` });
      box.addEventListener('input', () => { paragraph.text = box.value; });
      const what = `paragraph ${index + 1}`;
      return h('li', {},
        h('label', { for: box.id }, `Paragraph ${index + 1}`),
        box,
        h('div', { class: 'actions start' },
          h('button', {
            'aria-label': `Move up: ${what}`,
            type: 'button', class: 'secondary small', disabled: index === 0, 'data-key': `p:${index}:up`,
            onclick: () => { paragraphs = moved(paragraphs, index, index - 1); fill([`p:${index - 1}:up`, `p:${index - 1}:down`]); },
          }, 'Move up'),
          h('button', {
            'aria-label': `Move down: ${what}`,
            type: 'button', class: 'secondary small', disabled: index === paragraphs.length - 1, 'data-key': `p:${index}:down`,
            onclick: () => { paragraphs = moved(paragraphs, index, index + 1); fill([`p:${index + 1}:down`, `p:${index + 1}:up`]); },
          }, 'Move down'),
          h('button', {
            'aria-label': `Remove: ${what}`,
            type: 'button', class: 'danger small',
            onclick: () => {
              paragraphs = paragraphs.filter((p) => p !== paragraph);
              fill([`p:${Math.min(index, paragraphs.length - 1)}:text`, 'add-paragraph']);
            },
          }, icon('trash'), 'Remove')));
    }));
    if (focusKeys) refocus(list.closest('form') || list, focusKeys);
  };
  fill();
  const leave = (focusKeys) => {
    view.editing = null;
    draw(view);
    refocus(view.main, focusKeys);
  };
  const form = h('form', {
    class: 'chapter-editor',
    'aria-label': `Edit ${chapter.title}`,
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        await put(chapterUrl(view.project, chapter), {
          paragraphs: paragraphs.filter((p) => p.text.trim()).map((p) => ({ text: p.text.trim(), sources: p.sources })),
        });
        announce(`${chapter.title} saved`);
        await chaptersPage(view.main, view.app, view.project, [`${key}:edit`]);
      } catch (error) {
        showError(error);
      }
    },
    onkeydown: (event) => { if (event.key === 'Escape') { event.preventDefault(); leave([`${key}:edit`]); } },
  },
  list,
  h('div', { class: 'actions start' },
    h('button', {
      type: 'button', class: 'secondary', 'data-key': 'add-paragraph',
      onclick: () => { paragraphs.push({ text: '', sources: [] }); fill([`p:${paragraphs.length - 1}:text`]); },
    }, icon('plus'), 'Add a paragraph')),
  h('div', { class: 'actions' },
    h('button', { type: 'button', class: 'secondary', onclick: () => leave([`${key}:edit`]) }, 'Cancel'),
    h('button', { type: 'submit' }, 'Save the chapter')));
  return form;
}
