// The family app end to end in Chromium, against a real `conch serve` on a tiny model with a
// fresh data directory (tests/browser/run.sh starts it). The steps build on each other, in
// order: the first sign-up makes the admin every later step acts as.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import {
  api, focusedNamed, openBrowser, screenshot, seriousViolations, tabTo, waitForReplies,
} from '../lib/harness.mjs';
import { cardPng, makePng, textChunks } from '../lib/png.mjs';

const ADMIN = { username: 'parent', password: 'correct horse battery', display: 'Pat Parent' };
const MEMBER = { username: 'kid.one', password: 'another long secret', display: 'Kit' };

let browser;
let page;

async function expectAccessible(name, on = page) {
  await screenshot(on, name);
  const violations = await seriousViolations(on);
  assert.deepEqual(violations, [], `axe on ${name}:\n${violations.join('\n')}`);
}

function conversationId() {
  return page.evaluate(() => location.hash.split('/')[2]);
}

async function conversation() {
  return api(page, `/api/conversations/${await conversationId()}`);
}

/** Sends `text` from the composer and waits for the reply (the `count`th on screen). */
async function send(text, count) {
  await page.getByRole('textbox', { name: 'Message', exact: true }).fill(text);
  await page.getByRole('button', { name: 'Send message' }).click();
  await waitForReplies(page, count);
}

describe('the family app in a browser', () => {
  before(async () => {
    browser = await openBrowser();
    page = browser.page;
  });

  after(async () => {
    await browser?.close();
  });

  it('serves the page with a strict Content-Security-Policy', async () => {
    const response = await page.goto('/');
    const policy = response.headers()['content-security-policy'];
    assert.match(policy, /script-src 'self'/);
    assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval/);
  });

  it('creates the first account, the administrator', async () => {
    await page.getByRole('heading', { name: 'Welcome to Conch' }).waitFor();
    await expectAccessible('01-signup');
    await page.getByLabel('Username', { exact: true }).fill(ADMIN.username);
    await page.getByLabel('Display name (optional)', { exact: true }).fill(ADMIN.display);
    await page.getByLabel('Password', { exact: true }).fill(ADMIN.password);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('heading', { name: 'New chat' }).waitFor();
    const me = await api(page, '/api/me');
    assert.equal(me.user.username, ADMIN.username);
    assert.equal(me.user.is_admin, true);
    assert.deepEqual(await api(page, '/api/setup'), { needs_admin: false });
  });

  it('streams a reply into the page while it is being written', async () => {
    await page.evaluate(() => {
      window.replySamples = [];
      new MutationObserver(() => {
        const replies = document.querySelectorAll('.message.assistant .content');
        const text = replies[replies.length - 1]?.textContent ?? '';
        if (text && text !== 'Thinking…' && text !== 'No text.') {
          window.replySamples.push({ length: text.length, streaming: !document.querySelector('.composer .stop').hidden });
        }
      }).observe(document.querySelector('.messages'), { childList: true, subtree: true, characterData: true });
    });
    await send('Tell me a story about a shell.', 1);
    // A tiny random model often writes nothing readable (its end token at once, or bytes that
    // are no UTF-8): ask again until a reply has text.
    let reply = null;
    for (let attempt = 1; !reply; attempt += 1) {
      const id = await page.locator('.message.assistant').last().getAttribute('data-id');
      const { messages } = await conversation();
      const stored = messages.find((m) => m.id === id);
      if (stored.content.trim()) {
        reply = stored;
      } else {
        assert.ok(attempt < 10, 'the model wrote no text in 10 replies');
        await page.evaluate(() => { window.replySamples = []; });
        await page.getByRole('button', { name: 'Regenerate reply' }).last().click();
        await page.locator('.message.assistant .pager .count', { hasText: `${attempt + 1} / ${attempt + 1}` }).waitFor();
        await waitForReplies(page, 1);
      }
    }
    assert.equal(reply.status, 'complete');
    const samples = await page.evaluate(() => window.replySamples);
    assert.ok(samples.some((s) => s.streaming && s.length > 0),
      `no text was shown before the reply ended (${JSON.stringify(samples)})`);
    // What was put together from the pieces is the reply the server stored, drawn afresh.
    const shown = await page.locator('.message.assistant .content').last().textContent();
    const stored = await page.evaluate(async (content) => {
      const { renderMarkdown } = await import('/assets/js/markdown.js');
      const box = document.createElement('div');
      box.append(renderMarkdown(content));
      return box.textContent;
    }, reply.content);
    assert.equal(shown, stored);
    assert.deepEqual(browser.problems, []);
  });

  it('regenerates a reply and pages between the alternatives', async () => {
    const first = await page.locator('.message.assistant').last().getAttribute('data-id');
    const pager = page.locator('.message.assistant .pager .count');
    const before = (await pager.count()) ? Number((await pager.last().textContent()).split('/')[1]) : 1;
    await page.getByRole('button', { name: 'Regenerate reply' }).last().click();
    await pager.filter({ hasText: `${before + 1} / ${before + 1}` }).waitFor();
    await waitForReplies(page, 1);
    const second = await page.locator('.message.assistant').last().getAttribute('data-id');
    assert.notEqual(second, first);
    await page.getByRole('button', { name: 'Previous reply' }).click();
    await pager.filter({ hasText: `${before} / ${before + 1}` }).waitFor();
    assert.equal(await page.locator('.message.assistant').last().getAttribute('data-id'), first);
    // Keeping the first one again records the choice on the server.
    await page.getByRole('button', { name: 'Keep this reply' }).click();
    await page.getByRole('button', { name: 'Keep this reply' }).waitFor({ state: 'detached' });
    let { messages } = await conversation();
    assert.equal(messages.find((m) => m.id === first).chosen, true);
    assert.equal(messages.find((m) => m.id === second).chosen, false);
    await page.getByRole('button', { name: 'Next reply' }).click();
    await pager.filter({ hasText: `${before + 1} / ${before + 1}` }).waitFor();
    assert.equal(await page.locator('.message.assistant').last().getAttribute('data-id'), second);
    // Continuing from the second one keeps it.
    await send('Go on.', 2);
    ({ messages } = await conversation());
    assert.equal(messages.find((m) => m.id === second).chosen, true);
    const question = messages.find((m) => m.role === 'user' && m.content === 'Go on.');
    assert.equal(question.parent_id, second);
  });

  it('rates a reply with a reason and a comment', async () => {
    const reply = page.locator('.message.assistant').last();
    const id = await reply.getAttribute('data-id');
    await reply.getByRole('button', { name: 'Bad reply' }).click();
    await reply.getByRole('button', { name: 'Not factual' }).click();
    await reply.getByLabel('Comment (optional)').fill('Shells do not talk.');
    await expectAccessible('03-chat-feedback');
    await reply.getByRole('button', { name: 'Save feedback' }).click();
    await reply.locator('.feedback').waitFor({ state: 'detached' });
    assert.equal(await reply.getByRole('button', { name: 'Bad reply' }).getAttribute('aria-pressed'), 'true');
    const { messages } = await conversation();
    assert.deepEqual(messages.find((m) => m.id === id).feedback,
      { rating: -1, reasons: ['not_factual'], comment: 'Shells do not talk.' });
  });

  it('edits a reply, keeping the original beside it', async () => {
    const reply = page.locator('.message.assistant').last();
    const originalId = await reply.getAttribute('data-id');
    await reply.getByRole('button', { name: 'Edit reply' }).click();
    await page.getByRole('textbox', { name: 'Edit the reply' }).fill('A **better** answer.');
    await page.getByRole('button', { name: 'Save edit' }).click();
    await page.locator('.message.assistant').last().locator('strong', { hasText: 'better' }).waitFor();
    assert.equal(await page.locator('.message.assistant .pager .count').last().textContent(), '2 / 2');
    const { messages } = await conversation();
    const original = messages.find((m) => m.id === originalId);
    const edited = messages.find((m) => m.content === 'A **better** answer.');
    assert.equal(edited.role, 'assistant');
    assert.equal(edited.parent_id, original.parent_id);
  });

  it('edits an earlier message into a new branch', async () => {
    const firstQuestion = page.locator('.message.user').first();
    await firstQuestion.getByRole('button', { name: 'Edit message' }).click();
    await page.getByRole('textbox', { name: 'Edit your message' }).fill('Tell me a poem instead.');
    await page.getByRole('button', { name: 'Save and send' }).click();
    await page.locator('.message.user .pager .count', { hasText: '2 / 2' }).waitFor();
    await waitForReplies(page, 1);
    const { messages } = await conversation();
    const edited = messages.find((m) => m.content === 'Tell me a poem instead.');
    const original = messages.find((m) => m.content === 'Tell me a story about a shell.');
    assert.equal(edited.parent_id, original.parent_id);
    assert.ok(messages.some((m) => m.role === 'assistant' && m.parent_id === edited.id));
    // The new branch is shown on its own: the later turns of the old branch are not.
    assert.equal(await page.locator('.message.user').count(), 1);
    await expectAccessible('02-chat');
  });

  it('stops a reply with the stop button', async () => {
    await page.getByRole('textbox', { name: 'Message', exact: true }).fill('Count to a thousand.');
    await page.getByRole('button', { name: 'Send message' }).click();
    // The reply may be only a few events long, so the press comes from inside the page the
    // moment the reply's row appears, rather than after a round trip to the test.
    const pressed = await page.evaluate(() => new Promise((resolve) => {
      const press = () => {
        if (!document.querySelector('.message.assistant .content[aria-busy="true"]')) return false;
        const stop = document.querySelector('.composer button[aria-label="Stop the reply"]');
        const visible = !stop.hidden && stop.getBoundingClientRect().width > 0;
        stop.focus();
        stop.click();
        resolve(visible);
        return true;
      };
      if (press()) return;
      const observer = new MutationObserver(() => { if (press()) observer.disconnect(); });
      observer.observe(document.querySelector('.messages'), { childList: true, subtree: true, attributes: true });
    }));
    assert.ok(pressed, 'the stop button is on screen while the reply streams');
    await page.getByText('Stopped before the end.').waitFor();
    await page.getByRole('button', { name: 'Send message' }).waitFor();
    assert.ok(await page.getByRole('textbox', { name: 'Message', exact: true }).evaluate((e) => e === document.activeElement),
      'focus goes back to the message box');
  });

  it('renames, searches and deletes conversations', async () => {
    await page.getByRole('button', { name: /^Rename/ }).first().click();
    await page.getByRole('dialog').getByLabel('Title').fill('Shell stories');
    await page.getByRole('dialog').getByRole('button', { name: 'Save' }).click();
    await page.getByRole('link', { name: /Shell stories/ }).waitFor();
    await page.getByRole('heading', { name: 'Shell stories', level: 1 }).waitFor();
    // A second chat, so that the search has something to leave out.
    await page.getByRole('link', { name: 'New chat' }).click();
    await send('Throwaway question', 1);
    const search = page.getByRole('searchbox', { name: 'Search chats' });
    await search.fill('poem instead');
    await page.waitForFunction(() => document.querySelectorAll('.conversation-list a').length === 1);
    await page.getByRole('link', { name: /Shell stories/ }).waitFor();
    await search.fill('');
    await page.waitForFunction(() => document.querySelectorAll('.conversation-list a').length === 2);
    await page.getByRole('button', { name: 'Delete “Throwaway question”' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await page.waitForFunction(() => document.querySelectorAll('.conversation-list a').length === 1);
    const list = await api(page, '/api/conversations');
    assert.deepEqual(list.map((c) => c.title), ['Shell stories']);
  });

  it('renders Markdown from the model without letting it inject markup', async () => {
    const result = await page.evaluate(async () => {
      const { renderMarkdown } = await import('/assets/js/markdown.js');
      const box = document.createElement('div');
      box.append(renderMarkdown([
        '# Title <script>window.pwned = 1</script>',
        '<img src=x onerror="window.pwned = 2">',
        '**bold** and `<b>code</b>` and [bad](javascript:window.pwned=3) and [good](https://example.org/a?b=1)',
        '```html', '<iframe src="https://evil.example"></iframe>', '```',
        '- one', '- two <svg onload="window.pwned = 4">',
      ].join('\n')));
      document.body.append(box);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const tags = [...box.querySelectorAll('*')].map((e) => e.tagName.toLowerCase());
      const links = [...box.querySelectorAll('a')].map((a) => a.getAttribute('href'));
      const text = box.textContent;
      box.remove();
      return { tags: [...new Set(tags)].sort(), links, text, pwned: window.pwned ?? null };
    });
    assert.equal(result.pwned, null);
    assert.deepEqual(result.tags, ['a', 'br', 'code', 'h3', 'li', 'p', 'pre', 'strong', 'ul']);
    assert.deepEqual(result.links, ['https://example.org/a?b=1']);
    for (const visible of ['<script>window.pwned = 1</script>', '<img src=x onerror="window.pwned = 2">', '<iframe src="https://evil.example"></iframe>', '<b>code</b>']) {
      assert.ok(result.text.includes(visible), `shown as text: ${visible}`);
    }
  });

  it('renders the usual Markdown structures', async () => {
    const outline = await page.evaluate(async (cases) => {
      const { renderMarkdown } = await import('/assets/js/markdown.js');
      // Each element as tag[children] and each text node as its text: the shape, not the markup.
      const shape = (node) => (node.nodeType === Node.TEXT_NODE ? node.textContent
        : `${node.tagName.toLowerCase()}[${[...node.childNodes].map(shape).join('|')}]`);
      return cases.map((text) => [...renderMarkdown(text).childNodes].map(shape).join(' '));
    }, [
      'A list:\n\n- one\n- two\n\nThe end.',
      '1. a\n2. b\n   - inner\n3. c',
      '> quoted\n> twice\n\nafter',
      'x *em* _em_ snake_case **b** ~~s~~ \\*plain\\* see https://example.org/x.',
      '```js\nlet a = 1 < 2;\n```\n\n    indented',
      '| h1 | h2 |\n|----|----|\n| c1 | c2 |',
      '## Heading\n\n---\nline one\nline two',
    ]);
    assert.deepEqual(outline, [
      'p[A list:] ul[li[one]|li[two]] p[The end.]',
      'ol[li[a]|li[p[b]|ul[li[inner]]]|li[c]]',
      'blockquote[p[quoted|br[]|twice]] p[after]',
      'p[x |em[em]| |em[em]| snake_case |strong[b]| |del[s]| |*|plain|*| see |a[https://example.org/x]|.]',
      'pre[code[let a = 1 < 2;]] pre[code[indented]]',
      'div[table[thead[tr[th[h1]|th[h2]]]|tbody[tr[td[c1]|td[c2]]]]]',
      'h4[Heading] hr[] p[line one|br[]|line two]',
    ]);
  });

  let created;
  it('creates a character with an avatar and chats with it', async () => {
    await page.getByRole('link', { name: 'Characters', exact: true }).click();
    await page.getByRole('heading', { name: 'Characters', level: 1 }).waitFor();
    await page.getByRole('link', { name: 'New character' }).click();
    await page.getByLabel('Name', { exact: true }).fill('Captain Nautilus');
    await page.getByLabel('Description', { exact: true }).fill('A retired sea captain who collects shells.');
    await page.getByLabel('Greeting', { exact: true }).fill('Ahoy! Seen any good shells lately?');
    await page.getByLabel('System prompt', { exact: true }).fill('You are Captain Nautilus. Speak like a sailor.');
    await page.getByLabel('Example dialogue', { exact: true }).fill('{{user}}: Hi\n{{char}}: Ahoy there!');
    await page.getByLabel('Tags', { exact: true }).fill('sea, shells');
    await page.getByLabel(/^Picture/).setInputFiles({ name: 'captain.png', mimeType: 'image/png', buffer: makePng(8, [200, 80, 20]) });
    await page.getByRole('button', { name: 'Create character' }).click();
    await page.getByRole('heading', { name: 'Edit Captain Nautilus' }).waitFor();
    await expectAccessible('05-character-editor');
    const id = await page.evaluate(() => location.hash.split('/')[2]);
    created = await api(page, `/api/characters/${id}`);
    assert.equal(created.greeting, 'Ahoy! Seen any good shells lately?');
    assert.deepEqual(created.tags, ['sea', 'shells']);
    assert.equal(created.has_avatar, true);
    await page.waitForFunction(() => document.querySelector('img.avatar')?.naturalWidth === 8);

    await page.getByRole('link', { name: 'Chat with Captain Nautilus' }).click();
    await page.getByText('Ahoy! Seen any good shells lately?').waitFor();
    assert.equal(await page.getByLabel('Character', { exact: true }).inputValue(), created.id);
    await send('Hello, captain!', 2);
    const { conversation: chat, messages } = await conversation();
    assert.equal(chat.character_id, created.id);
    const greeting = messages.find((m) => m.parent_id === null);
    assert.equal(greeting.content, 'Ahoy! Seen any good shells lately?');
    assert.equal(messages.find((m) => m.content === 'Hello, captain!').parent_id, greeting.id);
  });

  let imported;
  it('imports a Character Card V2 PNG and exports it again', async () => {
    const card = {
      spec: 'chara_card_v2',
      spec_version: '2.0',
      data: {
        name: 'Marina the Mermaid',
        description: 'Sings to the tide.',
        personality: 'cheerful',
        scenario: 'A rock pool at dusk.',
        first_mes: 'Hello from the rock pool!',
        mes_example: '<START>\n{{char}}: La la la.',
        creator_notes: '',
        system_prompt: 'Stay in character as Marina.',
        post_history_instructions: '',
        alternate_greetings: [],
        tags: ['sea'],
        creator: 'tests',
        character_version: '1',
        extensions: { conch_browser_test: { kept: true } },
      },
    };
    await page.getByRole('link', { name: 'Characters', exact: true }).click();
    await page.getByRole('heading', { name: 'Characters', level: 1 }).waitFor();
    await page.getByLabel('Import a card (JSON or PNG)').setInputFiles({ name: 'marina.png', mimeType: 'image/png', buffer: cardPng(card) });
    await page.getByRole('heading', { name: 'Edit Marina the Mermaid' }).waitFor();
    assert.equal(await page.getByLabel('Greeting', { exact: true }).inputValue(), 'Hello from the rock pool!');
    assert.equal(await page.getByLabel('System prompt', { exact: true }).inputValue(), 'Stay in character as Marina.');
    imported = await api(page, `/api/characters/${await page.evaluate(() => location.hash.split('/')[2])}`);
    assert.equal(imported.has_avatar, true);

    const downloadPng = page.waitForEvent('download');
    await page.getByRole('link', { name: 'Export PNG of Marina the Mermaid' }).click();
    const png = readFileSync(await (await downloadPng).path());
    const exported = JSON.parse(Buffer.from(textChunks(png).chara, 'base64').toString('utf8'));
    assert.equal(exported.spec, 'chara_card_v2');
    assert.equal(exported.data.name, 'Marina the Mermaid');
    assert.equal(exported.data.first_mes, 'Hello from the rock pool!');
    assert.deepEqual(exported.data.extensions.conch_browser_test, { kept: true });

    // The same card as JSON imports too.
    await page.getByRole('link', { name: 'All characters' }).click();
    await page.getByLabel('Import a card (JSON or PNG)').setInputFiles({
      name: 'marina.json', mimeType: 'application/json',
      buffer: Buffer.from(JSON.stringify({ ...card, data: { ...card.data, name: 'Marina Again' } })),
    });
    await page.getByRole('heading', { name: 'Edit Marina Again' }).waitFor();
    assert.equal(await page.getByLabel('Scenario', { exact: true }).inputValue(), 'A rock pool at dusk.');
    await page.goBack();
    await page.getByRole('heading', { name: 'Characters', level: 1 }).waitFor();
    await page.goBack();
    await page.getByRole('heading', { name: 'Edit Marina the Mermaid' }).waitFor();

    const downloadJson = page.waitForEvent('download');
    await page.getByRole('link', { name: 'Export JSON of Marina the Mermaid' }).click();
    const json = JSON.parse(readFileSync(await (await downloadJson).path(), 'utf8'));
    assert.equal(json.data.system_prompt, 'Stay in character as Marina.');
  });

  it('publishes a character to the household gallery', async () => {
    await page.getByRole('button', { name: 'Share in the household gallery' }).click();
    await page.waitForFunction(() => document.querySelector('button[aria-pressed="true"]')?.textContent.includes('Share'));
    assert.equal((await api(page, `/api/characters/${imported.id}`)).published, true);
    await page.getByRole('link', { name: 'Characters', exact: true }).click();
    await page.getByRole('heading', { name: 'Characters', level: 1 }).waitFor();
    await expectAccessible('04-characters');
  });

  it('adds a household member and downloads the four exports', async () => {
    await page.getByRole('link', { name: 'Household' }).click();
    await page.getByRole('heading', { name: 'Household', level: 1 }).waitFor();
    await page.getByLabel('Username', { exact: true }).fill(MEMBER.username);
    await page.getByLabel('Display name (optional)', { exact: true }).fill(MEMBER.display);
    await page.getByLabel('Password', { exact: true }).fill(MEMBER.password);
    await page.getByRole('button', { name: 'Add member' }).click();
    await page.getByRole('rowheader', { name: MEMBER.username }).waitFor();
    await expectAccessible('06-household');
    const lines = {};
    for (const [format, label] of [['trl-preference', 'TRL preference pairs'], ['trl-kto', 'TRL KTO'],
      ['openai-sft', 'OpenAI fine-tuning'], ['openai-preference', 'OpenAI preference']]) {
      const download = page.waitForEvent('download');
      await page.getByRole('link', { name: label, exact: true }).click();
      const text = readFileSync(await (await download).path(), 'utf8');
      lines[format] = text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
    }
    // One rating (thumbs down) and one kept reply were given above.
    assert.ok(lines['trl-kto'].length >= 1, 'the rating is in the KTO export');
    assert.ok(lines['trl-preference'].length >= 1, 'the kept reply is in the preference export');
  });

  it('scales the text and switches to high contrast', async () => {
    await page.getByRole('link', { name: 'Settings' }).click();
    await page.getByRole('heading', { name: 'Settings', level: 1 }).waitFor();
    await page.getByLabel('Largest (200%)').check();
    await page.getByLabel('High contrast (black, white and yellow)').check();
    assert.equal(await page.evaluate(() => getComputedStyle(document.body).fontSize), '32px');
    assert.equal(await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor), 'rgb(0, 0, 0)');
    await expectAccessible('07-settings-large-high-contrast');
    await page.reload();
    await page.getByRole('heading', { name: 'Settings', level: 1 }).waitFor();
    assert.equal(await page.evaluate(() => document.documentElement.classList.contains('high-contrast')), true);
    await page.goto('/#/chat');
    await page.getByRole('link', { name: /Shell stories/ }).click();
    await page.locator('.message.assistant').first().waitFor();
    await expectAccessible('08-chat-large-high-contrast');
    await page.goto('/#/settings');
    await page.getByLabel('Normal (100%)').check();
    await page.getByLabel('High contrast (black, white and yellow)').uncheck();
  });

  it('has no script errors or CSP violations along the way', () => {
    assert.deepEqual(browser.problems, []);
  });
});

describe('a household member, by keyboard alone', () => {
  let member;
  before(async () => {
    member = await openBrowser();
  });
  after(async () => {
    await member?.close();
  });

  it('signs in, chats, rates and finds the other pages without a mouse', async () => {
    const p = member.page;
    await p.goto('/');
    await p.getByRole('heading', { name: 'Sign in' }).waitFor();
    await expectAccessible('10-login', p);
    await tabTo(p, 'the username field', () => document.activeElement?.name === 'username');
    await p.keyboard.type(MEMBER.username);
    await p.keyboard.press('Tab');
    await p.keyboard.type(MEMBER.password);
    await p.keyboard.press('Enter');
    await p.getByRole('heading', { name: 'New chat' }).waitFor();
    assert.equal(await p.getByRole('link', { name: 'Household' }).count(), 0, 'members see no admin page');

    await tabTo(p, 'the message box', focusedNamed, 'Message');
    await p.keyboard.type('Hi from the keyboard');
    await p.keyboard.press('Enter');
    await waitForReplies(p, 1);
    await p.keyboard.press('Shift+Tab');
    await tabTo(p, 'the thumbs-up button', focusedNamed, 'Good reply', { key: 'Shift+Tab' });
    await p.keyboard.press('Enter');
    await p.waitForFunction(() => document.activeElement?.classList.contains('chip'));
    await p.keyboard.press('Space'); // the first reason: Accurate
    await tabTo(p, 'the save button', focusedNamed, 'Save feedback');
    await p.keyboard.press('Enter');
    await p.locator('.feedback').waitFor({ state: 'detached' });
    const id = await p.evaluate(() => location.hash.split('/')[2]);
    const { messages } = await api(p, `/api/conversations/${id}`);
    const reply = messages.find((m) => m.role === 'assistant');
    assert.deepEqual(reply.feedback, { rating: 1, reasons: ['accurate'], comment: null });

    // The main navigation by keyboard: the characters page, with the shared character in it.
    await tabTo(p, 'the Characters link', focusedNamed, 'Characters', { key: 'Shift+Tab' });
    await p.keyboard.press('Enter');
    await p.getByRole('heading', { name: 'Household gallery' }).waitFor();
    await tabTo(p, 'the copy button', focusedNamed, 'Copy to mine: Marina the Mermaid');
    await p.keyboard.press('Enter');
    await p.getByRole('heading', { name: 'Edit Marina the Mermaid' }).waitFor();
    assert.deepEqual(member.problems, []);
  });

  it('fits a phone-sized screen', async () => {
    const phone = await openBrowser({ width: 390, height: 844 });
    try {
      const p = phone.page;
      await p.goto('/');
      await p.getByLabel('Username', { exact: true }).fill(MEMBER.username);
      await p.getByLabel('Password', { exact: true }).fill(MEMBER.password);
      await p.getByRole('button', { name: 'Sign in' }).click();
      await p.getByRole('link', { name: /Hi from the keyboard/ }).click();
      await p.locator('.message.assistant').first().waitFor();
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `the chat is ${overflow}px wider than the screen`);
      await expectAccessible('11-phone-chat', p);
      await p.getByRole('button', { name: 'Chats' }).click();
      await p.getByRole('searchbox', { name: 'Search chats' }).waitFor();
      await expectAccessible('12-phone-chat-list', p);
      await p.getByRole('button', { name: /^Sign out/ }).click();
      await p.getByRole('heading', { name: 'Sign in' }).waitFor();
      assert.equal(await p.evaluate(async () => (await fetch('/api/me')).status), 401);
      assert.deepEqual(phone.problems, []);
    } finally {
      await phone.close();
    }
  });
});
