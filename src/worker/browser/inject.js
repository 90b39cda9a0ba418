// Page side of the Flow HQ WhatsApp Web driver (src/worker/browser/page.rs evaluates this file
// in the page once `window.Debug.VERSION` exists, again after every navigation).
//
// Owns: looking up WhatsApp Web's internal modules through `window.require`, reporting what
// happens (QR payloads, state, authenticated/ready, messages, acks, logout) to Rust through the
// CDP binding `__flowhqEmit` (one JSON string per call), and the commands Rust calls:
// `window.__flowhqSend(chat, quotedId, text)`, `window.__flowhqSeen(chat)`,
// `window.__flowhqLogout()`, `window.__flowhqTakeover()`, `window.__flowhqPairingCode(phone)`.
// Does not: touch the DOM, patch WhatsApp functions, filter or dedup messages (the bot
// pipeline does), or call anything on the test-only `window.__fakeWa`.
//
// The expression evaluates to a Promise of {ok:true} or {ok:false, missingModule|missingMember,
// detail}, so Rust can name exactly what a WhatsApp Web update removed.
(async () => {
  'use strict';
  if (window.__flowhqInjected) return { ok: true, again: true };
  const raw = window.__flowhqEmit;
  if (typeof raw !== 'function') return { ok: false, missingMember: 'binding __flowhqEmit' };
  const emit = (t, data) => { // `ev` names the event; `t` is taken by message timestamps
    try {
      raw(JSON.stringify(Object.assign({}, data || {}, { ev: t })));
    } catch (e) {
      /* the binding only fails while the page is being torn down */
    }
  };
  const warn = (where, e) => emit('warn', { message: where + ': ' + ((e && e.message) || String(e)) });

  if (typeof window.require !== 'function') return { ok: false, missingMember: 'window.require' };
  const REQUIRED = [
    'WAWebSocketModel', 'WAWebConnModel', 'WAWebCmd', 'WAWebCollections', 'WAWebWidFactory',
    'WAWebFindChatAction', 'WAWebMsgKey', 'WAWebSendMsgChatAction', 'WAWebUserPrefsMeUser',
    'WAWebCompanionRegClientUtils', 'WAWebUserPrefsInfoStore', 'WAWebSignalStoreApi',
    'WAWebUserPrefsMultiDevice', 'WABase64',
  ];
  const m = {};
  for (const name of REQUIRED) {
    let mod;
    try {
      mod = window.require(name);
    } catch (e) {
      return { ok: false, missingModule: name, detail: String((e && e.message) || e) };
    }
    if (mod == null) return { ok: false, missingModule: name, detail: 'require returned nothing' };
    m[name] = mod;
  }

  // Registration helpers are spread over several modules; look members up in all of them.
  const reg = Object.assign({}, m.WAWebCompanionRegClientUtils, m.WAWebUserPrefsInfoStore,
    m.WAWebSignalStoreApi);
  const Socket = m.WAWebSocketModel.Socket;
  const Conn = m.WAWebConnModel.Conn;
  const Cmd = m.WAWebCmd.Cmd;
  const Msg = m.WAWebCollections.Msg;
  const Chat = m.WAWebCollections.Chat;
  const MsgKey = typeof m.WAWebMsgKey === 'function' ? m.WAWebMsgKey : m.WAWebMsgKey.default;
  const checks = [
    ['WAWebSocketModel.Socket', Socket && typeof Socket.on === 'function'],
    ['WAWebConnModel.Conn', Conn && typeof Conn.on === 'function'],
    ['WAWebCmd.Cmd', Cmd && typeof Cmd.on === 'function'],
    ['WAWebCollections.Msg', Msg && typeof Msg.on === 'function'],
    ['WAWebCollections.Chat', Chat && typeof Chat.get === 'function'],
    ['WAWebMsgKey (class)', typeof MsgKey === 'function' && typeof MsgKey.newId === 'function'],
    ['waNoiseInfo', reg.waNoiseInfo && typeof reg.waNoiseInfo.get === 'function'],
    ['waSignalStore', reg.waSignalStore && typeof reg.waSignalStore.getRegistrationInfo === 'function'],
    ['DEVICE_PLATFORM', reg.DEVICE_PLATFORM !== undefined],
    ['WAWebUserPrefsMultiDevice.getADVSecretKey', typeof m.WAWebUserPrefsMultiDevice.getADVSecretKey === 'function'],
    ['WABase64.encodeB64', typeof m.WABase64.encodeB64 === 'function'],
    ['WAWebWidFactory.createWid', typeof m.WAWebWidFactory.createWid === 'function'],
    ['WAWebFindChatAction.findOrCreateLatestChat', typeof m.WAWebFindChatAction.findOrCreateLatestChat === 'function'],
    ['WAWebSendMsgChatAction.addAndSendMsgToChat', typeof m.WAWebSendMsgChatAction.addAndSendMsgToChat === 'function'],
    ['WAWebUserPrefsMeUser.getMaybeMePnUser', typeof m.WAWebUserPrefsMeUser.getMaybeMePnUser === 'function'],
  ];
  for (const [name, ok] of checks) {
    if (!ok) return { ok: false, missingMember: name };
  }
  window.__flowhqInjected = true;

  const wid = (w) => {
    if (w == null) return null;
    if (typeof w === 'string') return w;
    if (typeof w._serialized === 'string') return w._serialized;
    return String(w);
  };

  // ---- QR ------------------------------------------------------------------------------
  const NEEDS_AUTH = ['UNPAIRED', 'UNPAIRED_IDLE'];
  let lastRef = null;
  const emitQr = async (ref) => {
    if (!ref || ref === lastRef || pairing.active || !NEEDS_AUTH.includes(Socket.state)) return;
    lastRef = ref;
    try {
      const [noise, regInfo] = await Promise.all([reg.waNoiseInfo.get(), reg.waSignalStore.getRegistrationInfo()]);
      const B64 = m.WABase64;
      const payload = [
        ref,
        B64.encodeB64(noise.staticKeyPair.pubKey),
        B64.encodeB64(regInfo.identityKeyPair.pubKey),
        m.WAWebUserPrefsMultiDevice.getADVSecretKey(),
        reg.DEVICE_PLATFORM,
      ].join(',');
      emit('qr', { payload });
    } catch (e) {
      warn('qr', e);
    }
  };
  Conn.on('change:ref', (_model, ref) => { emitQr(ref); });

  // ---- linking with a phone number (pairing code) ---------------------------------------------
  // A fourth command for Rust: `window.__flowhqPairingCode(phone)` resolves to the 8-character
  // code WhatsApp Web got for `phone` (digits with the country code), through the module the
  // reference client uses (WAWebAltDeviceLinkingApi: setPairingType('ALT_DEVICE_LINKING'),
  // initializeAltDeviceLinking(), startAltLinkingFlow(phone, showNotification)). Rust calls it
  // again for a fresh code while no phone is linked. Once asked, the page is in the code flow:
  // no QR payloads are reported and an expired QR is not refreshed (as the reference does).
  const pairing = { active: false };
  window.__flowhqPairingCode = async (phone) => {
    let alt;
    try {
      alt = window.require('WAWebAltDeviceLinkingApi');
    } catch (e) {
      throw new Error('module WAWebAltDeviceLinkingApi: ' + ((e && e.message) || e));
    }
    for (const f of ['setPairingType', 'initializeAltDeviceLinking', 'startAltLinkingFlow']) {
      if (!alt || typeof alt[f] !== 'function') throw new Error('WAWebAltDeviceLinkingApi.' + f + ' is missing');
    }
    if (!NEEDS_AUTH.includes(Socket.state)) throw new Error('WhatsApp Web is not waiting for a link (state ' + Socket.state + ')');
    pairing.active = true;
    alt.setPairingType('ALT_DEVICE_LINKING');
    await alt.initializeAltDeviceLinking();
    return String(await alt.startAltLinkingFlow(String(phone), true));
  };

  // ---- state, authenticated, ready -----------------------------------------------------------
  let authSent = false;
  let readySent = false;
  const authenticated = () => {
    if (authSent) return;
    authSent = true;
    emit('authenticated');
  };
  const ready = () => {
    if (readySent) return;
    authenticated();
    readySent = true;
    let me = null;
    try {
      me = wid(m.WAWebUserPrefsMeUser.getMaybeMePnUser());
      if (!me && typeof m.WAWebUserPrefsMeUser.getMaybeMeLidUser === 'function') {
        me = wid(m.WAWebUserPrefsMeUser.getMaybeMeLidUser());
      }
    } catch (e) {
      warn('me', e);
    }
    let pushName = null;
    try {
      pushName = Conn.pushname || (typeof Conn.serialize === 'function' && Conn.serialize().pushname) || null;
    } catch (e) {
      warn('pushname', e);
    }
    emit('ready', { me, pushName });
  };
  const onState = (state) => {
    emit('state', { state: String(state) });
    if (state === 'CONNECTED') authenticated();
    if (state === 'UNPAIRED_IDLE' && !pairing.active) {
      try {
        Cmd.refreshQR();
      } catch (e) {
        warn('refreshQR', e);
      }
    }
    if (NEEDS_AUTH.includes(state)) emitQr(Conn.ref);
  };
  Socket.on('change:state', (_model, state) => onState(state));
  Socket.on('change:hasSynced', (_model, synced) => { if (synced) ready(); });

  // ---- logout ---------------------------------------------------------------------------
  Cmd.on('logout', () => emit('logout', { source: 'logout' }));
  Cmd.on('logout_from_bridge', () => emit('logout', { source: 'logout_from_bridge' }));

  // ---- message text and own sends ---------------------------------------------------------------
  // A media message's `body` holds its thumbnail (base64), not text: its text is the caption,
  // empty without one (whatsapp-web.js reads media the same way).
  const MEDIA_TYPES = ['image', 'video', 'ptt', 'audio', 'document', 'sticker'];
  const textOf = (msg) => (MEDIA_TYPES.includes(msg.type) || !!msg.directPath
    ? String(msg.caption || '')
    : String(msg.body || ''));
  // Ids of the messages __flowhqSend created, so their `add` (and any later one of the same
  // message) is reported as our own reply and not as something the business typed on its
  // phone. Bounded: the oldest go first.
  const sentHere = new Set();
  const rememberSent = (id) => {
    sentHere.add(id);
    if (sentHere.size > 1000) sentHere.delete(sentHere.values().next().value);
  };
  const sentByUs = (id) => sentHere.has(id);

  // ---- messages -------------------------------------------------------------------------
  const serialize = (msg) => {
    const id = msg.id || {};
    return {
      id: wid(id._serialized || id),
      shortId: String(id.id || ''),
      remote: wid(id.remote),
      participant: wid(id.participant),
      fromMe: !!id.fromMe,
      from: wid(msg.from),
      to: wid(msg.to),
      author: wid(msg.author),
      body: textOf(msg),
      type: String(msg.type || ''),
      t: Number(msg.t || 0),
      notifyName: msg.notifyName || null,
      isNewMsg: !!msg.isNewMsg,
      isStatusV3: !!msg.isStatusV3,
      hasMedia: !!(msg.directPath || msg.mediaKey || msg.mediaData),
      ownReply: !!id.fromMe && sentByUs(wid(id._serialized || id)),
    };
  };
  Msg.on('add', (msg) => {
    try {
      if (msg.type === 'ciphertext' && typeof msg.once === 'function') {
        msg.once('change:type', () => emit('message', serialize(msg)));
      } else {
        emit('message', serialize(msg));
      }
    } catch (e) {
      warn('message', e);
    }
  });
  Msg.on('change:ack', (msg, ack) => {
    try {
      if (msg.id && msg.id.fromMe) emit('ack', { id: wid(msg.id._serialized || msg.id), ack: Number(ack) });
    } catch (e) {
      warn('ack', e);
    }
  });

  // ---- commands called from Rust -----------------------------------------------------------
  const findMsg = async (serialized) => {
    let q = Msg.get(serialized);
    if (!q && typeof Msg.getMessagesById === 'function') {
      const r = await Msg.getMessagesById([serialized]);
      q = r && r.messages && r.messages[0];
    }
    return q || null;
  };
  window.__flowhqSend = async (chatId, quotedId, text) => {
    const W = m.WAWebWidFactory;
    let chatWid;
    try {
      chatWid = W.createWid(chatId);
    } catch (e) {
      throw new Error('invalid chat id ' + chatId);
    }
    let chat = Chat.get(chatWid);
    if (!chat) {
      const found = await m.WAWebFindChatAction.findOrCreateLatestChat(chatWid);
      chat = found && found.chat;
    }
    if (!chat) throw new Error('chat not found');

    let quote = {};
    let quoted = false;
    const q = quotedId ? await findMsg(quotedId) : null;
    if (q && (typeof q.canReply !== 'function' || q.canReply()) && typeof q.msgContextInfo === 'function') {
      quote = q.msgContextInfo(chat) || {};
      quoted = true;
    }

    const Me = m.WAWebUserPrefsMeUser;
    const lidChat = (chat.id.isLid && chat.id.isLid()) ||
      !!(chat.groupMetadata && chat.groupMetadata.isLidAddressingMode);
    let from = lidChat && typeof Me.getMaybeMeLidUser === 'function' ? Me.getMaybeMeLidUser() : Me.getMaybeMePnUser();
    if (!from) from = Me.getMaybeMePnUser();
    const isGroup = chat.id.isGroup && chat.id.isGroup();
    const key = new MsgKey({
      from,
      to: chat.id,
      id: await MsgKey.newId(),
      participant: isGroup ? from : undefined,
      selfDir: 'out',
    });
    let ephemeral = {};
    try {
      const E = window.require('WAWebGetEphemeralFieldsMsgActionsUtils');
      ephemeral = (E && E.getEphemeralFields && E.getEphemeralFields(chat)) || {};
    } catch (e) {
      /* optional: only disappearing-message chats need it */
    }
    const data = Object.assign({
      id: key,
      ack: 0,
      body: text,
      from,
      to: chat.id,
      local: true,
      self: 'out',
      t: Math.floor(Date.now() / 1000),
      isNewMsg: true,
      type: 'chat',
    }, ephemeral, quote);
    rememberSent(key._serialized);
    const [added] = m.WAWebSendMsgChatAction.addAndSendMsgToChat(chat, data);
    await added;
    return { id: key._serialized, quoted };
  };
  // Marks a chat read as whatsapp-web.js does before each send: Stream.markAvailable(),
  // WAWebUpdateUnreadChatAction.sendSeen({chat}), Stream.markUnavailable(). Looked up per call:
  // a WhatsApp Web update that breaks read receipts must not stop the bot.
  window.__flowhqSeen = async (chatId) => {
    const chat = Chat.get(m.WAWebWidFactory.createWid(chatId));
    if (!chat) throw new Error('chat not found');
    const Stream = window.require('WAWebStreamModel').Stream;
    const Unread = window.require('WAWebUpdateUnreadChatAction');
    Stream.markAvailable();
    try {
      await Unread.sendSeen({ chat });
    } finally {
      Stream.markUnavailable();
    }
    return true;
  };
  window.__flowhqLogout = async () => { await Socket.logout(); return true; };
  window.__flowhqTakeover = async () => { await Socket.takeover(); return true; };

  // Report where things stand now, then rely on the listeners above. Reading the current
  // values (not only listening) covers a sync that finished before this script ran.
  onState(Socket.state);
  if (Socket.hasSynced) ready();
  return { ok: true };
})()
