// Chats: the conversation list (search, rename, delete), the message tree shown one branch at a
// time with ‹ n/m › paging between alternatives, streamed replies with a stop button,
// regenerate, edit-and-branch, feedback, and the model and character pickers of a new chat.

import { ApiError, del, get, patch, post, put, stream } from './api.js';
import { announce, askText, confirmAction, field, h, replace, showError, uid, when } from './dom.js';
import { icon } from './icons.js';
import { renderMarkdown } from './markdown.js';
import { MessageTree, parentKey } from './tree.js';

const REASONS = {
  1: [['accurate', 'Accurate'], ['followed_instructions', 'Followed instructions'], ['creative', 'Creative'],
    ['attention_to_detail', 'Attention to detail'], ['thorough', 'Thorough']],
  [-1]: [['style', 'Style'], ['not_factual', 'Not factual'], ['did_not_follow_instructions', 'Did not follow instructions'],
    ['refused', 'Refused'], ['lazy', 'Lazy'], ['other', 'Other']],
};

export async function chatPage(main, app, id, query) {
  const view = new ChatView(main, app);
  app.leave = () => view.leave();
  await view.open(id, query);
}

/** A button showing only an icon, named for screen readers by `label`. */
function iconButton(name, label, onclick, extra = {}) {
  return h('button', { type: 'button', class: 'icon-button', 'aria-label': label, title: label, onclick, ...extra }, icon(name));
}

class ChatView {
  constructor(main, app) {
    this.main = main;
    this.app = app;
    this.conversation = null;
    this.tree = new MessageTree();
    this.picked = new Map();
    this.streaming = null;
    this.editing = null;
    this.feedbackFor = null;
    this.models = [];
    this.characters = [];
    this.searchText = '';
    this.contentNodes = new Map();
    this.pendingRender = new Set();
  }

  leave() {
    if (this.streaming) this.streaming.controller.abort();
    this.left = true;
  }

  async open(id, query) {
    const [models, characters] = await Promise.all([get('/api/models'), get('/api/characters')]);
    this.models = models;
    this.characters = characters;
    this.draft = {
      model: models[0]?.id ?? null,
      characterId: characters.some((c) => c.id === query.get('character')) ? query.get('character') : '',
    };
    if (id && id !== 'new') {
      const { conversation, messages } = await get(`/api/conversations/${encodeURIComponent(id)}`);
      this.conversation = conversation;
      this.tree = new MessageTree(messages);
    }
    this.listOnly = !id;
    this.layout();
    await this.loadList();
    this.render();
  }

  layout() {
    this.list = h('ul', { class: 'conversation-list' });
    const search = h('input', {
      type: 'search', placeholder: 'Search chats', 'aria-label': 'Search chats', autocomplete: 'off',
      oninput: () => {
        clearTimeout(this.searchTimer);
        this.searchTimer = setTimeout(() => { this.searchText = search.value.trim(); this.loadList(); }, 250);
      },
    });
    this.sidebar = h('nav', { class: 'sidebar', id: 'chat-sidebar', 'aria-label': 'Chats' },
      h('a', {
        class: 'button', href: '#/chat/new',
        // The same address again would not redraw the page, so start afresh by hand.
        onclick: (event) => { if (location.hash === '#/chat/new') { event.preventDefault(); this.app.go('#/chat/new'); } },
      }, icon('plus'), 'New chat'),
      h('div', { role: 'search', class: 'search' }, icon('search'), search),
      this.list);
    this.header = h('div', { class: 'chat-header' });
    this.messagesNode = h('ol', { class: 'messages', 'aria-label': 'Messages' });
    this.composer = this.buildComposer();
    this.pane = h('section', { class: 'chat-pane', 'aria-labelledby': 'chat-title' },
      this.header, this.messagesNode, this.composer.form);
    const layout = h('div', { class: `chat-layout${this.listOnly ? ' list-only' : ''}` }, this.sidebar, this.pane);
    replace(this.main, layout);
    this.layoutNode = layout;
  }

  async loadList() {
    const q = this.searchText ? `?q=${encodeURIComponent(this.searchText)}` : '';
    let conversations;
    try {
      conversations = await get(`/api/conversations${q}`);
    } catch (error) {
      showError(error);
      return;
    }
    if (this.left) return;
    const items = conversations.map((c) => {
      const title = c.title || 'Untitled chat';
      const current = this.conversation && c.id === this.conversation.id;
      return h('li', { class: current ? 'current' : null },
        h('a', { href: `#/chat/${c.id}`, 'aria-current': current ? 'page' : null },
          h('span', { class: 'title' }, title), h('span', { class: 'meta' }, when(c.updated_at))),
        iconButton('edit', `Rename “${title}”`, () => this.rename(c)),
        iconButton('trash', `Delete “${title}”`, () => this.remove(c)));
    });
    if (items.length === 0) {
      items.push(h('li', { class: 'empty' }, this.searchText ? 'No chats match.' : 'No chats yet.'));
    }
    replace(this.list, items);
  }

  async rename(conversation) {
    const title = await askText('Rename chat', 'Title', conversation.title || '');
    if (!title) return;
    try {
      const updated = await patch(`/api/conversations/${conversation.id}`, { title });
      if (this.conversation && this.conversation.id === updated.id) {
        this.conversation = updated;
        this.renderHeader();
      }
      await this.loadList();
      announce(`Renamed to ${title}`);
    } catch (error) {
      showError(error);
    }
  }

  async remove(conversation) {
    const title = conversation.title || 'Untitled chat';
    if (!await confirmAction('Delete chat?', `“${title}” and all its messages will be deleted.`, 'Delete')) return;
    try {
      await del(`/api/conversations/${conversation.id}`);
      announce(`Deleted ${title}`);
      if (this.conversation && this.conversation.id === conversation.id) this.app.go('#/chat');
      else await this.loadList();
    } catch (error) {
      showError(error);
    }
  }

  character() {
    const id = this.conversation ? this.conversation.character_id : this.draft.characterId;
    return this.characters.find((c) => c.id === id) || null;
  }

  render() {
    this.renderHeader();
    this.renderMessages();
    this.renderComposer();
  }

  renderHeader() {
    const title = this.conversation ? (this.conversation.title || 'Untitled chat') : 'New chat';
    document.title = `${title} · Conch`;
    const toggle = h('button', {
      type: 'button', class: 'secondary sidebar-toggle', 'aria-controls': 'chat-sidebar',
      'aria-expanded': String(this.layoutNode.classList.contains('show-list')),
      onclick: () => {
        const shown = this.layoutNode.classList.toggle('show-list');
        toggle.setAttribute('aria-expanded', String(shown));
      },
    }, icon('menu'), 'Chats');
    const details = [];
    if (this.conversation) {
      const character = this.character();
      details.push(h('p', { class: 'meta' },
        this.conversation.model ? `Model: ${this.conversation.model}` : null,
        character ? ` · Character: ${character.name}` : null));
    } else {
      const modelSelect = h('select', { onchange: () => { this.draft.model = modelSelect.value; } },
        this.models.map((m) => h('option', { value: m.id, selected: m.id === this.draft.model }, m.id)));
      const characterSelect = h('select', {
        onchange: () => { this.draft.characterId = characterSelect.value; this.renderMessages(); },
      },
      h('option', { value: '' }, 'None (plain assistant)'),
      this.characters.map((c) => h('option', { value: c.id, selected: c.id === this.draft.characterId }, c.name)));
      details.push(h('div', { class: 'pickers' }, field('Model', modelSelect), field('Character', characterSelect)));
    }
    replace(this.header, toggle, h('h1', { id: 'chat-title' }, title), details);
  }

  /** Redraws the branch on show, keeping keyboard focus on the control that had it. */
  renderMessages() {
    const focusKey = document.activeElement?.dataset?.key;
    this.contentNodes.clear();
    const path = this.tree.path(this.picked);
    const items = path.filter((m) => m.role !== 'system').map((m) => this.renderMessage(m));
    if (items.length === 0) {
      const greeting = this.character()?.greeting;
      items.push(h('li', { class: 'empty' }, greeting
        ? [h('p', {}, `${this.character().name} will greet you with:`), h('blockquote', {}, renderMarkdown(greeting))]
        : h('p', {}, 'Write a message to start.')));
    }
    replace(this.messagesNode, items);
    if (focusKey) this.messagesNode.querySelector(`[data-key="${CSS.escape(focusKey)}"]`)?.focus();
  }

  speaker(message) {
    if (message.role === 'user') return this.app.user.display_name || this.app.user.username || 'You';
    return this.character()?.name || 'Assistant';
  }

  renderMessage(message) {
    const streaming = this.streaming && this.streaming.replyId === message.id;
    const content = h('div', { class: 'content', 'aria-busy': streaming ? 'true' : null });
    this.fillContent(content, message);
    this.contentNodes.set(message.id, content);
    const item = h('li', { class: `message ${message.role}`, 'data-id': message.id },
      h('h2', { class: 'speaker' }, this.speaker(message)),
      this.editing === message.id ? this.editForm(message) : content,
      message.status === 'stopped' ? h('p', { class: 'status' }, 'Stopped before the end.') : null,
      message.status === 'failed' ? h('p', { class: 'status error' }, `The reply failed${message.error ? `: ${message.error}` : '.'}`) : null,
      this.editing === message.id ? null : this.toolbar(message));
    if (this.feedbackFor === message.id) item.append(this.feedbackPanel(message));
    return item;
  }

  fillContent(node, message) {
    if (message.role === 'assistant') replace(node, renderMarkdown(message.content));
    else replace(node, h('p', { class: 'plain' }, message.content));
    if (!message.content) {
      const writing = this.streaming && this.streaming.replyId === message.id;
      node.append(h('p', { class: 'typing' }, writing ? 'Thinking…' : 'No text.'));
    }
  }

  toolbar(message) {
    const busy = Boolean(this.streaming);
    const siblings = this.tree.siblings(message);
    const at = siblings.findIndex((m) => m.id === message.id);
    const key = parentKey(message);
    const tools = [];
    if (siblings.length > 1) {
      const kind = message.role === 'user' ? 'version' : 'reply';
      tools.push(h('div', { class: 'pager', role: 'group', 'aria-label': `Alternative ${kind}s` },
        iconButton('prev', `Previous ${kind}`, () => this.page(key, siblings[at - 1]), { disabled: at === 0 || busy, 'data-key': `prev:${key}` }),
        h('span', { class: 'count' }, `${at + 1} / ${siblings.length}`),
        iconButton('next', `Next ${kind}`, () => this.page(key, siblings[at + 1]), { disabled: at === siblings.length - 1 || busy, 'data-key': `next:${key}` })));
      if (!message.chosen) {
        tools.push(h('button', { type: 'button', class: 'small secondary', disabled: busy, 'data-key': `keep:${key}`, onclick: () => this.keep(message) },
          icon('check'), `Keep this ${kind}`));
      }
    }
    if (message.role === 'user' || message.role === 'assistant') {
      tools.push(iconButton('edit', message.role === 'user' ? 'Edit message' : 'Edit reply',
        () => { this.editing = message.id; this.renderMessages(); this.messagesNode.querySelector('.edit-form textarea')?.focus(); },
        { disabled: busy, 'data-key': `edit:${message.id}` }));
    }
    if (message.role === 'assistant') {
      tools.push(iconButton('regenerate', 'Regenerate reply', () => this.regenerate(message), { disabled: busy, 'data-key': `regen:${message.id}` }));
      const rating = message.feedback?.rating;
      tools.push(
        iconButton('up', 'Good reply', () => this.rate(message, 1), { 'aria-pressed': String(rating === 1), disabled: busy || message.status === 'streaming', 'data-key': `up:${message.id}` }),
        iconButton('down', 'Bad reply', () => this.rate(message, -1), { 'aria-pressed': String(rating === -1), disabled: busy || message.status === 'streaming', 'data-key': `down:${message.id}` }));
    }
    return h('div', { class: 'toolbar' }, tools);
  }

  page(key, sibling) {
    if (!sibling) return;
    this.picked.set(key, sibling.id);
    this.feedbackFor = null;
    this.renderMessages();
    const siblings = this.tree.siblings(sibling);
    announce(`Showing ${siblings.indexOf(sibling) + 1} of ${siblings.length}`);
  }

  /** Records that the person keeps `message` over its siblings. */
  async keep(message) {
    try {
      await post(`/api/messages/${message.id}/choose`);
      for (const sibling of this.tree.siblings(message)) sibling.chosen = sibling.id === message.id;
      this.picked.set(parentKey(message), message.id);
      this.renderMessages();
      announce('Kept');
    } catch (error) {
      showError(error);
    }
  }

  /** Continuing from a branch keeps every alternative shown on it. */
  async keepPath(path) {
    for (const message of path) {
      if (!message.chosen && this.tree.siblings(message).length > 1) {
        await post(`/api/messages/${message.id}/choose`);
        for (const sibling of this.tree.siblings(message)) sibling.chosen = sibling.id === message.id;
      }
    }
  }

  editForm(message) {
    const text = h('textarea', { rows: '4', value: message.content, 'aria-label': message.role === 'user' ? 'Edit your message' : 'Edit the reply' });
    const cancel = () => { this.editing = null; this.renderMessages(); };
    return h('form', {
      class: 'edit-form',
      onsubmit: (event) => { event.preventDefault(); this.saveEdit(message, text.value); },
      onkeydown: (event) => { if (event.key === 'Escape') { event.preventDefault(); cancel(); } },
    },
    text,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', onclick: cancel }, 'Cancel'),
      h('button', { type: 'submit' }, message.role === 'user' ? 'Save and send' : 'Save edit')));
  }

  async saveEdit(message, content) {
    if (!content.trim()) return;
    this.editing = null;
    if (message.role === 'user') {
      const path = this.tree.path(this.picked);
      await this.keepPath(path.slice(0, path.findIndex((m) => m.id === message.id))).catch(showError);
      await this.run(`/api/messages/${message.id}/edit`, { content });
      return;
    }
    try {
      const edited = await post(`/api/messages/${message.id}/edit`, { content });
      this.tree.put(edited);
      this.picked.set(parentKey(edited), edited.id);
      this.renderMessages();
      announce('Reply edited');
    } catch (error) {
      showError(error);
      this.renderMessages();
    }
  }

  async regenerate(message) {
    await this.run(`/api/messages/${message.id}/regenerate`);
  }

  async rate(message, rating) {
    const same = message.feedback?.rating === rating;
    if (same) {
      // A second press on the same thumb opens (or closes) the reasons again.
      this.feedbackFor = this.feedbackFor === message.id ? null : message.id;
      this.renderMessages();
      return;
    }
    try {
      message.feedback = await put(`/api/messages/${message.id}/feedback`, { rating, reasons: [] });
      this.feedbackFor = message.id;
      this.renderMessages();
      announce(rating === 1 ? 'Rated good. Add reasons if you like.' : 'Rated bad. Add reasons if you like.');
      this.messagesNode.querySelector('.feedback .chip')?.focus();
    } catch (error) {
      showError(error);
    }
  }

  feedbackPanel(message) {
    const feedback = message.feedback || { rating: 1, reasons: [], comment: '' };
    const chosen = new Set(feedback.reasons || []);
    const comment = h('textarea', { rows: '2', value: feedback.comment || '' });
    const legendId = uid('reasons');
    const chips = REASONS[feedback.rating].map(([value, label]) => {
      const chip = h('button', {
        type: 'button', class: 'chip', 'aria-pressed': String(chosen.has(value)),
        onclick: () => {
          if (chosen.has(value)) chosen.delete(value); else chosen.add(value);
          chip.setAttribute('aria-pressed', String(chosen.has(value)));
        },
      }, label);
      return chip;
    });
    const close = () => {
      this.feedbackFor = null;
      this.renderMessages();
      const thumb = message.feedback?.rating === -1 ? 'down' : 'up';
      this.messagesNode.querySelector(`[data-key="${thumb}:${message.id}"]`)?.focus();
    };
    return h('form', {
      class: 'feedback',
      'aria-label': 'Feedback on this reply',
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const body = { rating: feedback.rating, reasons: [...chosen] };
          if (comment.value.trim()) body.comment = comment.value.trim();
          message.feedback = await put(`/api/messages/${message.id}/feedback`, body);
          close();
          announce('Feedback saved. Thank you.');
        } catch (error) {
          showError(error);
        }
      },
    },
    h('p', { id: legendId, class: 'label' }, feedback.rating === 1 ? 'What was good?' : 'What went wrong?'),
    h('div', { class: 'chips', role: 'group', 'aria-labelledby': legendId }, chips),
    field('Comment (optional)', comment),
    h('div', { class: 'actions' },
      h('button', {
        type: 'button', class: 'secondary',
        onclick: async () => {
          try {
            await del(`/api/messages/${message.id}/feedback`);
            message.feedback = null;
            close();
            announce('Rating removed');
          } catch (error) {
            showError(error);
          }
        },
      }, 'Remove rating'),
      h('button', { type: 'button', class: 'secondary', onclick: close }, 'Close'),
      h('button', { type: 'submit' }, 'Save feedback')));
  }

  buildComposer() {
    const textarea = h('textarea', {
      rows: '2', placeholder: 'Write a message…', 'aria-label': 'Message', required: true,
      onkeydown: (event) => {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          form.requestSubmit();
        }
      },
    });
    const send = h('button', { type: 'submit', class: 'send', 'aria-label': 'Send message', title: 'Send (Enter)' }, icon('send'));
    const stop = h('button', {
      type: 'button', class: 'stop danger', 'aria-label': 'Stop the reply', title: 'Stop',
      onclick: () => this.streaming?.controller.abort(),
    }, icon('stop'), 'Stop');
    const form = h('form', {
      class: 'composer',
      onsubmit: (event) => {
        event.preventDefault();
        const text = textarea.value;
        if (!text.trim() || this.streaming) return;
        textarea.value = '';
        this.sendMessage(text);
      },
    }, textarea, send, stop);
    return { form, textarea, send, stop };
  }

  renderComposer() {
    const busy = Boolean(this.streaming);
    // Hiding the focused stop button would drop focus to the page; the message box takes it.
    const stopHadFocus = this.composer.stop === document.activeElement;
    this.composer.send.hidden = busy;
    this.composer.stop.hidden = !busy;
    if (!busy && stopHadFocus) this.composer.textarea.focus();
  }

  async sendMessage(content) {
    try {
      if (!this.conversation) {
        const body = { title: content.trim().replace(/\s+/g, ' ').slice(0, 60) };
        if (this.draft.model) body.model = this.draft.model;
        if (this.draft.characterId) body.character_id = this.draft.characterId;
        this.conversation = await post('/api/conversations', body);
        // The address names the new chat without drawing the page again.
        history.replaceState(null, '', `#/chat/${this.conversation.id}`);
        this.layoutNode.classList.remove('list-only');
        const { messages } = await get(`/api/conversations/${this.conversation.id}`);
        this.tree = new MessageTree(messages);
        this.renderHeader();
      }
      const path = this.tree.path(this.picked);
      await this.keepPath(path);
      const parent = path[path.length - 1];
      await this.run(`/api/conversations/${this.conversation.id}/messages`,
        parent ? { content, parent_id: parent.id } : { content });
    } catch (error) {
      showError(error);
      this.composer.textarea.value ||= content;
    }
  }

  /** Streams a request that adds messages and a reply, showing the reply as it grows. */
  async run(url, body) {
    const controller = new AbortController();
    this.streaming = { controller, replyId: null };
    this.feedbackFor = null;
    this.renderMessages();
    this.renderComposer();
    announce('Replying…');
    let finished = null;
    try {
      await stream(url, body, (event) => {
        if (event.type === 'message') {
          this.tree.put(event.message);
          this.picked.set(parentKey(event.message), event.message.id);
          if (event.message.role === 'assistant') this.streaming.replyId = event.message.id;
          this.renderMessages();
        } else if (event.type === 'delta') {
          const message = this.tree.get(event.message_id);
          if (!message) return;
          message.content += event.text;
          this.scheduleContent(message.id);
        } else if (event.type === 'done') {
          this.tree.put(event.message);
          finished = event.message;
        } else if (event.type === 'error') {
          const message = this.tree.get(event.message_id);
          if (message) Object.assign(message, { status: 'failed', error: event.error });
          showError(new ApiError(500, `The reply failed: ${event.error}`));
        }
      }, controller.signal);
    } catch (error) {
      const reply = this.tree.get(this.streaming.replyId);
      if (controller.signal.aborted) {
        if (reply) reply.status = 'stopped';
        if (!this.left) announce('Stopped');
      } else {
        if (reply) reply.status = 'failed';
        showError(error);
      }
    }
    this.streaming = null;
    if (this.left) return;
    this.renderMessages();
    this.renderComposer();
    if (finished) announce(`${this.speaker(finished)} said: ${finished.content}`);
    await this.loadList();
  }

  /** Redraws a growing reply at most once a frame, however many pieces arrive. */
  scheduleContent(id) {
    this.pendingRender.add(id);
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      for (const pending of this.pendingRender) {
        const node = this.contentNodes.get(pending);
        const message = this.tree.get(pending);
        if (node && message) this.fillContent(node, message);
      }
      this.pendingRender.clear();
      const last = this.messagesNode.lastElementChild;
      if (last) last.scrollIntoView({ block: 'end' });
    });
  }
}
