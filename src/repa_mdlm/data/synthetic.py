"""Synthetic Portuguese-like text, for checks that need a corpus where no corpus package is installed
(a lent GPU machine has no registry): real words in a seeded, Zipf-like random order. It exercises
tokenizers, packing and training; it says nothing about learning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# A few hundred common Portuguese words, most frequent first.
PORTUGUESE_WORDS = """
de a o que e do da em um para é com não uma os no se na por mais as dos como mas foi ao ele das tem à seu
sua ou ser quando muito há nos já está eu também só pelo pela até isso ela entre era depois sem mesmo aos
ter seus quem nas me esse eles estão você tinha foram essa num nem suas meu às minha têm numa pelos elas
havia seja qual será nós tenho lhe deles essas esses pelas este fosse dele tu te vocês vos lhes meus minhas
teu tua teus tuas nosso nossa nossos nossas dela delas esta estes estas aquele aquela aqueles aquelas isto
aquilo estou estamos estava estavam esteve tudo nada sempre nunca ainda agora hoje ontem amanhã aqui
ali lá onde porque porém então assim bem mal pouco tanto cada outro outra outros outras todo toda todos
todas algum alguma nenhum grande pequeno novo velho bom boa melhor pior primeiro último mesma própria
casa cidade terra mundo vida tempo dia noite ano semana mês hora vez parte lado lugar caminho rua porta
janela mesa livro palavra nome homem mulher filho filha pai mãe irmão irmã amigo povo gente criança rei
senhor senhora trabalho escola igreja governo país história verdade coisa forma maneira ideia razão
problema questão resposta pergunta água fogo pão vinho mar rio monte campo árvore flor fruto pedra sol lua
estrela céu chuva vento luz sombra coração alma corpo mão olho cabeça voz sangue força paz guerra amor
medo fé esperança alegria tristeza fazer dizer ir ver dar saber querer ficar poder dever passar vir
chegar falar levar deixar encontrar chamar começar voltar viver morrer pensar conhecer olhar sentir
tomar sair entrar ouvir escrever ler correr andar comer beber dormir abrir fechar subir descer ganhar
perder pedir responder seguir trazer buscar mostrar contar esperar lembrar acreditar aprender ensinar
faz disse vai viu deu sabe quer ficou pode deve passou veio chegou falou levou deixou encontrou chamou
começou voltou vive morreu pensou conheceu olhou sentiu tomou saiu entrou ouviu escreveu leu correu
andou comeu bebeu dormiu abriu fechou subiu desceu ganhou perdeu pediu respondeu seguiu trouxe buscou
mostrou contou esperou lembrou acreditou aprendeu ensinou alto baixo longo curto claro escuro quente frio
forte fraco rico pobre feliz triste certo errado fácil difícil antigo moderno branco negro verde azul
vermelho amarelo português brasileiro santo sagrado justo sábio puro livre cheio vazio perto longe
diante atrás sobre sob contra durante segundo conforme desde após antes logo quase apenas talvez além
dentro fora acima abaixo junto através contudo portanto enquanto embora caso
""".split()


def write_synthetic_corpus(out: Path, documents: int, seed: int = 0, vocabulary: list[str] | None = None,
                           words_per_document: int | None = None) -> Path:
    """`documents` .txt files in `out`, one document each, words drawn with p(rank) ~ 1 / (rank + 2.7).
    Deterministic for a seed. By default: punctuated sentences of PORTUGUESE_WORDS. With
    `words_per_document`: that many bare words from `vocabulary`, for a word-level tokenizer."""
    rng = np.random.default_rng(seed)
    words = PORTUGUESE_WORDS if vocabulary is None else vocabulary
    freq = 1.0 / (np.arange(len(words)) + 2.7)
    freq /= freq.sum()
    out.mkdir(parents=True, exist_ok=True)
    for d in range(documents):
        if words_per_document:
            text = " ".join(words[i] for i in rng.choice(len(words), size=words_per_document, p=freq))
        else:
            sentences = []
            for _ in range(int(rng.integers(6, 14))):
                picked = [words[i] for i in rng.choice(len(words), size=int(rng.integers(5, 16)), p=freq)]
                if rng.random() < 0.3:
                    picked[int(rng.integers(1, len(picked) - 1))] += ","
                sentence = " ".join(picked)
                sentences.append(sentence[0].upper() + sentence[1:] + (".", ".", ".", "?", "!", ";")[int(rng.integers(6))])
            text = " ".join(sentences)
        (out / f"doc{d:05d}.txt").write_text(text + "\n", encoding="utf-8")
    return out
