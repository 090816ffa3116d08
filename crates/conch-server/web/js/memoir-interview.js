// The memoir interview, made for a teller who has never used a computer: one question at a time
// in very large type, spoken aloud (again on a press, more slowly if asked), answered by pressing
// one big button and talking (the recording is uploaded and transcribed on the server) or, when
// that is not possible, by typing. Everything the teller reads is in the project's language.

import { ApiError, get, post } from './api.js';
import { h, replace, showError } from './dom.js';
import { icon } from './icons.js';
import { projectPath } from './memoir-shared.js';

const WORDS = {
  en: {
    chapter: 'Chapter: ',
    play: 'Hear the question',
    slower: 'Speak more slowly',
    talk: 'Press here and talk',
    stopTalking: 'I have finished',
    listening: 'Listening… Press the button again when you have finished.',
    saving: 'Saving your answer…',
    heard: 'Thank you. I heard:',
    nextComing: 'Thinking of the next question…',
    typeInstead: 'Type the answer instead',
    yourAnswer: 'Your answer',
    send: 'Send the answer',
    nothingRecorded: 'Nothing was recorded. Press the button and talk.',
    savedNotHeard: 'Your recording is saved safely, but the words could not be made out yet. You can try again, or type the answer.',
    noSpeech: 'Your recording is saved safely. This computer cannot turn speech into text yet, so please type the answer.',
    noVoice: 'This computer cannot listen or speak yet: please type the answer.',
    noMicrophone: 'The microphone could not be used. Please type the answer.',
    finished: 'That was the last question. Thank you for telling your story!',
    notReady: 'The next question is not ready yet.',
    retry: 'Try again',
  },
  'zh-Hans': {
    chapter: '章节：',
    play: '听问题',
    slower: '说慢一点',
    talk: '按这里，然后说话',
    stopTalking: '我说完了',
    listening: '正在听…… 说完后请再按一下按钮。',
    saving: '正在保存您的回答……',
    heard: '谢谢。我听到的是：',
    nextComing: '正在想下一个问题……',
    typeInstead: '改为打字回答',
    yourAnswer: '您的回答',
    send: '发送回答',
    nothingRecorded: '没有录到声音。请按按钮，然后说话。',
    savedNotHeard: '您的录音已经安全保存，但还没能听清内容。您可以再说一次，或者打字回答。',
    noSpeech: '您的录音已经安全保存。这台电脑还不能把说话变成文字，请打字回答。',
    noVoice: '这台电脑还不能听或说：请打字回答。',
    noMicrophone: '无法使用麦克风。请打字回答。',
    finished: '这是最后一个问题。谢谢您讲述您的故事！',
    notReady: '下一个问题还没有准备好。',
    retry: '再试一次',
  },
};

const SLOW_KEY = 'conch.memoir.slow';
/** The container types MediaRecorder may make, best first (the server decodes all of them). */
const RECORDING_TYPES = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/webm', 'audio/mp4'];

export async function interviewPage(main, app, project) {
  const view = new InterviewView(main, app, project);
  app.leave = () => view.leave();
  await view.open();
}

class InterviewView {
  constructor(main, app, project) {
    this.main = main;
    this.app = app;
    this.project = project;
    this.words = WORDS[project.language] || WORDS.en;
    this.question = null;
    this.busy = false;
    this.slow = localStorage.getItem(SLOW_KEY) === '1';
    /** Spoken questions already fetched: `${slow}:${language}:${text}` → object URL. */
    this.spoken = new Map();
    this.player = new Audio();
    this.recording = null;
  }

  leave() {
    this.left = true;
    this.player.pause();
    if (this.recording) {
      this.recording.discard = true;
      this.recording.recorder.stop();
    }
    for (const url of this.spoken.values()) URL.revokeObjectURL(url);
  }

  async open() {
    document.title = `Interview · ${this.project.title} · Conch`;
    const speech = await get('/api/memoir/speech');
    this.voice = speech.installed && Boolean(navigator.mediaDevices?.getUserMedia) && typeof MediaRecorder !== 'undefined';
    this.speaks = speech.installed;
    this.layout();
    if (!this.voice) this.say(this.words.noVoice);
    // Browsers play sound only after a press on the page; arriving here by a link was one.
    if (await this.askNext() && navigator.userActivation?.hasBeenActive) this.speak();
  }

  /**
   * Fetches the question to answer now (the same one again while it has no answer) and shows
   * it; when the server cannot give one, says so and offers to try again. True when shown.
   */
  async askNext() {
    this.retryButton.hidden = true;
    let next;
    try {
      next = await post(`/api/memoir/projects/${this.project.id}/interview/next`);
    } catch (error) {
      if (this.left) return false;
      this.show(null, false);
      this.say(`${this.words.notReady} (${error.message})`);
      this.retryButton.hidden = false;
      return false;
    }
    if (this.left) return false;
    this.show(next.question, next.finished);
    return true;
  }

  layout() {
    const w = this.words;
    this.chapterNode = h('p', { class: 'kicker' });
    this.questionNode = h('h1', { class: 'question', tabindex: '-1' });
    this.playButton = h('button', { type: 'button', class: 'big secondary', onclick: () => this.speak() }, icon('next'), w.play);
    this.slowButton = h('button', {
      type: 'button', class: 'big secondary', 'aria-pressed': String(this.slow),
      onclick: () => {
        this.slow = !this.slow;
        localStorage.setItem(SLOW_KEY, this.slow ? '1' : '0');
        this.slowButton.setAttribute('aria-pressed', String(this.slow));
        this.speak();
      },
    }, w.slower);
    this.talkButton = h('button', { type: 'button', class: 'talk', onclick: () => this.toggleRecording() }, w.talk);
    this.statusNode = h('div', { class: 'status', role: 'status' });
    this.retryButton = h('button', {
      type: 'button', class: 'big', hidden: true,
      onclick: async () => { if (await this.askNext()) { this.questionNode.focus(); this.speak(); } },
    }, icon('regenerate'), w.retry);
    this.answerBox = h('textarea', { rows: '4', id: 'typed-answer', name: 'answer' });
    this.typeForm = h('form', {
      class: 'type-answer',
      onsubmit: (event) => { event.preventDefault(); this.sendTyped(); },
    },
    h('label', { for: 'typed-answer' }, w.yourAnswer),
    this.answerBox,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'big' }, icon('send'), w.send)));
    this.typeToggle = h('button', {
      type: 'button', class: 'secondary', 'aria-expanded': 'false', 'aria-controls': 'type-answer-form',
      onclick: () => this.showTyping(this.typeForm.hidden),
    }, w.typeInstead);
    this.typeForm.id = 'type-answer-form';
    this.typeForm.hidden = true;
    this.listenControls = h('div', { class: 'listen' }, this.playButton, this.slowButton);
    this.typingControls = h('div', { class: 'typing' }, this.typeToggle, this.typeForm);

    replace(this.main, h('div', { class: 'interview', lang: this.project.language },
      h('p', { class: 'breadcrumb', lang: 'en' },
        h('a', { href: projectPath(this.project) }, icon('prev'), `Back to ${this.project.title}`)),
      this.chapterNode,
      this.questionNode,
      this.listenControls,
      h('div', { class: 'answer' }, this.talkButton, this.statusNode, this.retryButton),
      this.typingControls));
    if (!this.voice) this.typeForm.hidden = false;
  }

  /** The server has no speech models after all: typing is the way to answer. */
  speechMissing() {
    this.speaks = false;
    this.voice = false;
    this.typeForm.hidden = false;
    this.setBusy(this.busy);
  }

  showTyping(shown) {
    this.typeForm.hidden = !shown;
    this.typeToggle.setAttribute('aria-expanded', String(shown));
    if (shown) this.answerBox.focus();
  }

  /** Shows `question`, or the end of the interview, or (neither) that none is ready. */
  show(question, finished) {
    this.question = question;
    if (!question) {
      this.chapterNode.textContent = '';
      this.questionNode.textContent = finished ? this.words.finished : this.words.notReady;
      this.questionNode.removeAttribute('lang');
    } else {
      this.chapterNode.textContent = `${this.words.chapter}${question.chapter_title}`;
      this.questionNode.textContent = question.text;
      this.questionNode.lang = question.language;
    }
    this.answerBox.value = '';
    this.setBusy(false);
  }

  /** Enables what can be pressed now; with no question to answer, only "Try again" is shown. */
  setBusy(busy) {
    this.busy = busy;
    this.listenControls.hidden = !this.speaks || !this.question;
    this.talkButton.hidden = !this.voice || !this.question;
    this.typeToggle.hidden = !this.voice;
    this.typingControls.hidden = !this.question;
    const idle = !busy && Boolean(this.question);
    this.talkButton.disabled = !idle && !this.recording;
    this.typeToggle.disabled = !idle;
    for (const control of this.typeForm.elements) control.disabled = !idle;
  }

  /** Says `text` in the status box, which is also a live region for screen readers. */
  say(text, heard = null) {
    replace(this.statusNode, h('p', {}, text), heard === null ? null : h('p', { class: 'heard' }, `“${heard}”`));
  }

  /** Speaks the current question aloud (a press restarts it). */
  async speak() {
    if (!this.speaks || !this.question) return;
    const { text, language } = this.question;
    const key = `${this.slow}:${language}:${text}`;
    try {
      let url = this.spoken.get(key);
      if (!url) {
        const query = new URLSearchParams({ text, language, slow: this.slow ? '1' : '0' });
        const response = await get(`/api/memoir/tts?${query}`);
        url = URL.createObjectURL(await response.blob());
        this.spoken.set(key, url);
      }
      if (this.left || this.question?.text !== text || this.recording) return;
      this.player.src = url;
      await this.player.play();
    } catch (error) {
      if (error.name === 'NotAllowedError' || error.name === 'AbortError') return;
      if (error instanceof ApiError && error.status === 503) {
        this.speechMissing();
        return;
      }
      showError(error);
    }
  }

  async toggleRecording() {
    if (this.recording) {
      this.recording.recorder.stop();
      return;
    }
    if (this.busy || !this.question) return;
    this.player.pause();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch {
      this.say(this.words.noMicrophone);
      this.showTyping(true);
      return;
    }
    const type = RECORDING_TYPES.find((t) => MediaRecorder.isTypeSupported(t));
    const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
    const chunks = [];
    this.recording = { recorder, discard: false };
    recorder.addEventListener('dataavailable', (event) => { if (event.data.size) chunks.push(event.data); });
    recorder.addEventListener('stop', () => {
      for (const track of stream.getTracks()) track.stop();
      const { discard } = this.recording;
      this.recording = null;
      this.talkButton.classList.remove('recording');
      this.talkButton.textContent = this.words.talk;
      if (!discard) this.upload(new Blob(chunks, { type: recorder.mimeType || type || 'audio/webm' }));
    });
    recorder.start();
    this.talkButton.classList.add('recording');
    this.talkButton.textContent = this.words.stopTalking;
    this.setBusy(true);
    this.say(this.words.listening);
  }

  async upload(audio) {
    if (!audio.size) {
      this.say(this.words.nothingRecorded);
      this.setBusy(false);
      return;
    }
    this.say(this.words.saving);
    const turnId = this.question.turn_id;
    try {
      // The server wants the bare media type: "audio/webm", not "audio/webm;codecs=opus".
      const result = await post(`/api/memoir/turns/${encodeURIComponent(turnId)}/recording`, audio,
        { headers: { 'Content-Type': audio.type.split(';')[0] } });
      if (this.left) return;
      if (result.turn.answer) {
        this.answered(result);
      } else {
        this.say(this.words.savedNotHeard);
        this.setBusy(false);
      }
    } catch (error) {
      if (this.left) return;
      this.setBusy(false);
      if (error.status === 503) {
        this.speechMissing();
        this.say(this.words.noSpeech);
        this.answerBox.focus();
      } else {
        showError(error);
      }
    }
  }

  async sendTyped() {
    const text = this.answerBox.value.trim();
    if (!text || this.busy || !this.question) return;
    this.setBusy(true);
    this.say(this.words.nextComing);
    try {
      const result = await post(`/api/memoir/turns/${encodeURIComponent(this.question.turn_id)}/answer`, { text });
      if (this.left) return;
      this.answered(result);
    } catch (error) {
      if (this.left) return;
      this.setBusy(false);
      this.say('');
      showError(error);
    }
  }

  /** After an answer: thanks with what was heard, then the next question, shown and spoken. */
  async answered({ turn, next, finished }) {
    this.say(this.words.heard, turn.answer);
    if (this.voice) this.showTyping(false);
    if (next || finished) {
      this.show(next, finished);
    } else {
      // The answer is kept, but no question came with it: ask for one.
      const heard = [...this.statusNode.childNodes];
      if (!await this.askNext()) {
        // What was heard stays above the reason no question follows.
        this.statusNode.prepend(...heard);
        return;
      }
    }
    this.questionNode.focus();
    this.speak();
  }
}
