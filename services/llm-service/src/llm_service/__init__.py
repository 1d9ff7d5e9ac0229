"""llm_service: streaming chat generation over gRPC (voiceai.llm.v1.LanguageModel).

Modules: settings (LLM_* environment), engine (model loading, prompt, one token
step), scheduler (round-robin worker thread, bounded queue), servicer (gRPC,
validation), detokenize (incremental text, stop strings), demo_model (the
embedded demo LLM trained from demo/bank_dialogue.json).
"""
